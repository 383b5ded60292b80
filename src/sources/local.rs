//! The `local` source: chatsync itself is the chat server.
//!
//! Chats exist once a message is sent to them; a message is SENT as soon as it is stored
//! ([`Source::is_native`]). SyncChats has no
//! upstream to pull from: it reports the stored chats and stores nothing new.
use std::sync::Arc;

use async_trait::async_trait;

use super::{Capabilities, ChatHistory, Source, SourceChat, SourceContext, SourceError};
use crate::sources::SessionConfig;

/// The source kind in the configuration.
pub const KIND: &str = "local";

/// Native chats, stored only in chatsync.
pub struct Local {
    context: SourceContext,
}

impl Local {
    /// Builds the source; it takes no settings.
    pub fn build(
        config: &SessionConfig,
        context: &SourceContext,
    ) -> Result<Arc<dyn Source>, String> {
        if let Some(key) = config.settings.keys().next() {
            return Err(format!(
                "the local source takes no settings (found {key:?})"
            ));
        }
        Ok(Arc::new(Self {
            context: context.clone(),
        }))
    }
}

#[async_trait]
impl Source for Local {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn list_chats(&self) -> Result<Vec<SourceChat>, SourceError> {
        let mut chats = Vec::new();
        let mut after_seq = 0;
        loop {
            let page = self
                .context
                .stored
                .chats(after_seq, 1_000)
                .await
                .map_err(|error| SourceError::Unavailable(error.to_string()))?;
            let Some(last) = page.last() else { break };
            after_seq = last.seq;
            chats.extend(page.into_iter().map(|chat| SourceChat {
                locator: chat.chat_id.clone(),
                chat_id: chat.chat_id,
                name: chat.name,
            }));
        }
        Ok(chats)
    }

    async fn fetch_history(
        &self,
        _chat: &SourceChat,
        _limit: Option<usize>,
    ) -> Result<ChatHistory, SourceError> {
        Ok(ChatHistory::default())
    }

    /// Native: storing a message (or a reaction, an edit, a deletion) is sending it; messages
    /// keep any number of files (in the blob store).
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            send: true,
            native: true,
            message_changes: true,
            max_files_per_message: usize::MAX,
            ..Capabilities::READ_ONLY
        }
    }
}

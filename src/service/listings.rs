//! The listings (ListChats, ListMessages, ListContacts, ListParticipants): seq cursors, page
//! sizes, and pages that fit a default client.
use super::*;
use crate::model::EncodedLen;

/// A page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor for the next page.
    pub next_seq: u64,
    pub has_more: bool,
}

pub(super) fn page_size(limit: u32) -> Result<u64> {
    match limit {
        0 => Ok(DEFAULT_PAGE as u64),
        n if n > MAX_PAGE => Err(Error::InvalidArgument(format!(
            "limit {n} is over the maximum of {MAX_PAGE}"
        ))),
        n => Ok(n as u64),
    }
}

/// The page budget for a `max_response_bytes` limit: three quarters of the smaller of it and
/// a default client's 4 MiB, leaving room for the response's own fields and framing.
pub(super) fn page_bytes(max_response_bytes: usize) -> usize {
    max_response_bytes.min(DEFAULT_CLIENT_MESSAGE_BYTES) / 4 * 3
}

/// How many of `items`, from the first, fit in `budget` bytes; at least one, so a page always
/// moves the cursor.
pub(super) fn fit_oldest<T>(items: &[T], budget: usize, size: impl Fn(&T) -> usize) -> usize {
    let mut bytes = 0;
    for (index, item) in items.iter().enumerate() {
        bytes += size(item);
        if bytes > budget && index > 0 {
            return index;
        }
    }
    items.len()
}

/// How many of `items`, from the last, fit in `budget` bytes; at least one when there is one.
pub(super) fn fit_newest<T>(items: &[T], budget: usize, size: impl Fn(&T) -> usize) -> usize {
    let mut bytes = 0;
    for (taken, item) in items.iter().rev().enumerate() {
        bytes += size(item);
        if bytes > budget && taken > 0 {
            return taken;
        }
    }
    items.len()
}

/// Cuts a listing fetched with `limit + 1` rows down to a page.
pub(super) fn page<T>(
    items: &mut Vec<T>,
    limit: u64,
    after_seq: u64,
    seq: impl Fn(&T) -> u64,
) -> Page<T> {
    let has_more = items.len() as u64 > limit;
    items.truncate(limit as usize);
    let next_seq = items.last().map(&seq).unwrap_or(after_seq);
    Page {
        items: std::mem::take(items),
        next_seq,
        has_more,
    }
}

impl ChatSync {
    /// A page of chats with `seq > after_seq`: at most `limit`, and fewer when their encoded
    /// size would pass the page budget (three quarters of the smaller of
    /// `max_response_bytes` and [`DEFAULT_CLIENT_MESSAGE_BYTES`]); `has_more` then says so.
    pub async fn list_chats(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Page<Chat>> {
        self.source(session_id)?;
        let limit = page_size(limit)?;
        let mut items = self
            .inner
            .store
            .list_chats(session_id, after_seq, limit + 1)
            .await?;
        let fitting = fit_oldest(&items, self.inner.page_bytes, EncodedLen::encoded_len);
        let limit = limit.min(fitting as u64);
        Ok(page(&mut items, limit, after_seq, |chat| chat.seq))
    }

    /// `NotFound` unless the chat, when one is named, is stored.
    pub(super) async fn ensure_chat(&self, session_id: &str, chat_id: Option<&str>) -> Result<()> {
        if let Some(chat_id) = chat_id
            && self
                .inner
                .store
                .find_chat(session_id, chat_id)
                .await?
                .is_none()
        {
            return Err(Error::NotFound(format!("chat {chat_id:?}")));
        }
        Ok(())
    }

    /// A page of messages of the session (or of one chat), in ascending seq order.
    ///
    /// Without `before_seq`: the oldest messages with `seq > after_seq` (paging forwards;
    /// `next_seq` is the last seq returned). With it: the newest with
    /// `after_seq < seq < before_seq` (paging backwards; `next_seq` is the oldest seq returned,
    /// or `before_seq` when none is, and `has_more` says whether older ones exist).
    ///
    /// A page holds at most `limit` messages, and fewer when their encoded size would pass the
    /// page budget (as in [`Self::list_chats`]), so the answer fits a default 4 MiB client;
    /// a page always holds at least one message when there is one.
    pub async fn list_messages(
        &self,
        session_id: &str,
        chat_id: Option<&str>,
        after_seq: u64,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Page<Message>> {
        self.source(session_id)?;
        let limit = page_size(limit)?;
        self.ensure_chat(session_id, chat_id).await?;
        let take = if before_seq.is_some() {
            Take::Newest
        } else {
            Take::Oldest
        };
        let mut items = self
            .inner
            .store
            .list_messages(session_id, chat_id, after_seq, before_seq, take, limit + 1)
            .await?;
        let Some(before_seq) = before_seq else {
            let fitting = fit_oldest(&items, self.inner.page_bytes, EncodedLen::encoded_len);
            let limit = limit.min(fitting as u64);
            return Ok(page(&mut items, limit, after_seq, |message| message.seq));
        };
        // The newest `limit + 1`, ascending: the extra rows are the oldest, at the front.
        let newest = items.len().min(limit as usize);
        let keep = fit_newest(
            &items[items.len() - newest..],
            self.inner.page_bytes,
            EncodedLen::encoded_len,
        );
        let has_more = items.len() > keep;
        items.drain(..items.len() - keep);
        let next_seq = items.first().map(|m| m.seq).unwrap_or(before_seq);
        Ok(Page {
            items,
            next_seq,
            has_more,
        })
    }

    /// A page of contacts with `seq > after_seq`, in seq order, sized as in
    /// [`Self::list_chats`].
    pub async fn list_contacts(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Page<Contact>> {
        self.source(session_id)?;
        let limit = page_size(limit)?;
        let mut items = self
            .inner
            .store
            .list_contacts(session_id, after_seq, limit + 1)
            .await?;
        let fitting = fit_oldest(&items, self.inner.page_bytes, EncodedLen::encoded_len);
        let limit = limit.min(fitting as u64);
        Ok(page(&mut items, limit, after_seq, |contact| contact.seq))
    }

    /// A page of participants with `seq > after_seq` (of one chat, when named: `NotFound`
    /// unless it is stored), in seq order, sized as in [`Self::list_chats`].
    pub async fn list_participants(
        &self,
        session_id: &str,
        chat_id: Option<&str>,
        after_seq: u64,
        limit: u32,
    ) -> Result<Page<Participant>> {
        self.source(session_id)?;
        let limit = page_size(limit)?;
        self.ensure_chat(session_id, chat_id).await?;
        let mut items = self
            .inner
            .store
            .list_participants(session_id, chat_id, after_seq, limit + 1)
            .await?;
        let fitting = fit_oldest(&items, self.inner.page_bytes, EncodedLen::encoded_len);
        let limit = limit.min(fitting as u64);
        Ok(page(&mut items, limit, after_seq, |participant| {
            participant.seq
        }))
    }
}

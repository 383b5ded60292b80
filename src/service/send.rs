//! SendMessage and UpdateMessageStatus: validation, the idempotency key, storing first, then
//! the source's send; the message's files in and out of the blob store (GetMedia).
use super::*;

/// A retry under a used idempotency key returns the stored message, but only when it asks for
/// the same thing: a key reused for another message is a client bug worth reporting.
pub(super) fn same_request(stored: Message, chat_id: &str, text: &str) -> Result<(Message, bool)> {
    // The text as sent: the first of an edited message's texts. A message deleted since has
    // none left to compare.
    let sent_text = stored
        .earlier_texts
        .first()
        .map_or(stored.text.as_str(), |earlier| earlier.text.as_str());
    let deleted = stored.kind == MessageKind::Deleted;
    if stored.chat_id != chat_id || (sent_text != text && !deleted) {
        return Err(Error::InvalidArgument(format!(
            "client_message_id {:?} was already used for another message (chat {:?})",
            stored.client_message_id.as_deref().unwrap_or_default(),
            stored.chat_id
        )));
    }
    Ok((stored, true))
}

/// Checks a file to send: a name of 1 to [`MAX_FILE_NAME_BYTES`] bytes, a MIME type of at most
/// 255, some bytes, and no NUL character.
pub(super) fn validate_upload(upload: &AttachmentUpload) -> Result<()> {
    let name = &upload.file_name;
    if name.trim().is_empty() || name.len() > MAX_FILE_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a file name must be 1 to {MAX_FILE_NAME_BYTES} bytes"
        )));
    }
    if upload.mime_type.len() > 255 {
        return Err(Error::InvalidArgument(
            "a MIME type must be at most 255 bytes".into(),
        ));
    }
    if name.contains('\0') || upload.mime_type.contains('\0') {
        return Err(Error::InvalidArgument(
            "a file name or MIME type must not contain NUL characters".into(),
        ));
    }
    if upload.data.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "file {name:?} has no bytes"
        )));
    }
    Ok(())
}

/// A SendMessage request in domain terms: its fields parsed, so that what a type can check
/// (the chat id, the idempotency key) is checked before the request reaches the service.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub session_id: String,
    pub chat_id: ChatId,
    /// The message text, UTF-8, at most [`MAX_TEXT_BYTES`]; may be empty when files are sent.
    pub text: String,
    /// The idempotency key; `None`: the server makes one ([`ClientMessageId::generate`]).
    pub client_message_id: Option<ClientMessageId>,
    /// Files to send with the message (each kept in the blob store).
    pub uploads: Vec<AttachmentUpload>,
    /// The server id of the message this one replies to, in the same chat.
    pub reply_to: Option<i64>,
}

impl SendRequest {
    /// A text message with no files and a key made by the server.
    pub fn text(session_id: impl Into<String>, chat_id: ChatId, text: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            chat_id,
            text: text.into(),
            client_message_id: None,
            uploads: Vec::new(),
            reply_to: None,
        }
    }
}

/// How long a replica's claim of a send lasts ([`Store::claim`]): longer than a send
/// takes (Graph calls time out after 30 s; rate limits are retried a few times), so that a
/// retry on another replica never posts while the first is in flight. A replica that dies
/// mid-send holds up the retries of that message for at most this long; after that a retry
/// posts it again (Graph has no idempotency key: if the dead replica's post had gone through,
/// the message is then sent twice).
pub const SEND_CLAIM: Duration = Duration::from_secs(300);

impl ChatSync {
    /// Stores a message, sends it through the source, and records the outcome. Returns the
    /// message and whether the idempotency key was seen before (then nothing is sent). A
    /// message with files is kind `Media` and its text may be empty; the files are put in the
    /// blob store before the message is stored.
    ///
    /// Errors: `InvalidArgument` for an empty text (with no files) or one over
    /// [`MAX_TEXT_BYTES`], a NUL character in the text, an idempotency key already used for
    /// another message, a file with an empty name or one over [`MAX_FILE_NAME_BYTES`], a MIME
    /// type over 255 bytes, no bytes or a NUL character, or more files than the source takes in
    /// one message; `NotFound` for an unknown session, or an unknown chat on a source that
    /// cannot create chats; `FailedPrecondition` for a read-only source or one that cannot send
    /// files; the source's error when it rejects the send (the message stays stored as
    /// FAILED).
    pub async fn send_message(&self, request: SendRequest) -> Result<(Message, bool)> {
        let SendRequest {
            session_id,
            chat_id,
            text,
            client_message_id,
            uploads,
            reply_to,
        } = request;
        let (session_id, chat_id, text) = (session_id.as_str(), chat_id.as_str(), text.as_str());
        let source = self.source(session_id)?.clone();
        refuse_nul("text", text)?;
        if text.trim().is_empty() && uploads.is_empty() {
            return Err(Error::InvalidArgument("text must not be empty".into()));
        }
        for upload in &uploads {
            validate_upload(upload)?;
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(Error::InvalidArgument(format!(
                "text is {} bytes; the limit is {MAX_TEXT_BYTES}",
                text.len()
            )));
        }
        let capabilities = source.capabilities();
        if !capabilities.send {
            return Err(sources::SourceError::ReadOnly(source.kind()).into());
        }
        let most_files = capabilities.max_files_per_message;
        if uploads.len() > most_files {
            return Err(if most_files == 0 {
                Error::FailedPrecondition(format!("the {} source cannot send files", source.kind()))
            } else {
                Error::InvalidArgument(format!(
                    "the {} source sends at most {most_files} file(s) per message",
                    source.kind()
                ))
            });
        }
        let store = &self.inner.store;
        let reply_to = match reply_to {
            Some(id) => {
                let quoted = store
                    .message_by_ref(session_id, &MessageRef::Id(id))
                    .await?;
                if quoted.chat_id != chat_id {
                    return Err(Error::InvalidArgument(format!(
                        "reply_to_message_id {id} is a message of another chat"
                    )));
                }
                Some(quoted.provider_message_id)
            }
            None => None,
        };
        let attachments = self.store_uploads(uploads).await?;
        let client_message_id = client_message_id
            .unwrap_or_else(ClientMessageId::generate)
            .as_str()
            .to_owned();
        // A native source's storage is its chat server: the stored message is the sent one.
        let (provider_message_id, status) = if capabilities.native {
            (format!("local-{client_message_id}"), MessageStatus::Sent)
        } else {
            (
                format!("pending-{client_message_id}"),
                MessageStatus::Pending,
            )
        };
        let new = NewMessage {
            provider_message_id,
            client_message_id: Some(client_message_id.clone()),
            // The account's own id upstream (a Matrix user id; `""` where there is none): a
            // send usually settles (SENT, from the source's answer) before its echo, which
            // then leaves the row alone, so the sender is right from the start; else the
            // account would count among the recipients whose receipts make it READ.
            sender: source.account_id().unwrap_or_default(),
            text: text.to_owned(),
            kind: if attachments.is_empty() {
                MessageKind::Text
            } else {
                MessageKind::Media
            },
            status,
            from_me: true,
            sent_at_ms: now_ms(),
            attachments,
            reply_to,
            ..NewMessage::default()
        };
        // A native source creates chats on first send; others only send to chats they have.
        let missing_chat = if capabilities.native {
            MissingChat::Create
        } else {
            MissingChat::Refuse
        };
        let (stored, created) = store
            .insert_outgoing(session_id, chat_id, &new, missing_chat)
            .await?;
        if !created {
            let (existing, duplicate) = same_request(stored, chat_id, text)?;
            // Still PENDING: the first attempt was cut off (a crash, a timeout) or is in flight
            // on another call. Send again; the source deduplicates on the idempotency key (on
            // this process; across replicas, see `deliver_claimed`), so this never posts
            // twice.
            if existing.status == MessageStatus::Pending && !capabilities.native {
                let (message, _) = self
                    .deliver_claimed(&source, existing, &client_message_id)
                    .await?;
                return Ok((message, true));
            }
            return Ok((existing, duplicate));
        }
        if status == MessageStatus::Sent {
            return Ok((stored, false));
        }
        self.deliver_claimed(&source, stored, &client_message_id)
            .await
    }

    /// [`deliver`](Self::deliver) for a source whose upstream does not deduplicate sends
    /// ([`sources::Capabilities::upstream_deduplicates`]; whatsapp-cloud: Graph has no
    /// idempotency key), first claiming the send's key for this replica
    /// ([`Store::claim`], for [`SEND_CLAIM`]): while another replica holds the claim, its
    /// post is in flight, and this call posts nothing and answers the message as stored
    /// (PENDING; the other replica's answer moves it on). The claim is dropped once the
    /// outcome is stored. Other sources deliver at once.
    async fn deliver_claimed(
        &self,
        source: &Arc<dyn Source>,
        stored: Message,
        client_message_id: &str,
    ) -> Result<(Message, bool)> {
        if source.capabilities().upstream_deduplicates {
            return self.deliver(source, stored, client_message_id).await;
        }
        let store = &self.inner.store;
        let session_id = stored.session_id.clone();
        let holder = self.inner.replica_id.as_str();
        let claim_ms = SEND_CLAIM.as_millis() as i64;
        if !store
            .claim(&session_id, client_message_id, holder, claim_ms)
            .await?
        {
            tracing::info!(
                session_id,
                client_message_id,
                "another replica is sending this message; not posting it again"
            );
            let now = store
                .message_by_ref(&session_id, &MessageRef::Id(stored.id))
                .await?;
            return Ok((now, true));
        }
        let outcome = self.deliver(source, stored, client_message_id).await;
        // A claim left behind (a storage failure here) only holds up retries until it expires.
        if let Err(error) = store
            .release_claim(&session_id, client_message_id, holder)
            .await
        {
            tracing::warn!(session_id, client_message_id, %error, "cannot drop a send claim");
        }
        outcome
    }

    /// Sends a stored PENDING message through its source and records the outcome: SENT with
    /// the source's id, or FAILED and the source's error; the source's code and title for it
    /// ([`sources::SourceError::reason`], a whatsapp-cloud Graph error) are kept on the FAILED
    /// status.
    pub(super) async fn deliver(
        &self,
        source: &Arc<dyn Source>,
        stored: Message,
        client_message_id: &str,
    ) -> Result<(Message, bool)> {
        let store = &self.inner.store;
        let (session_id, chat_id) = (stored.session_id.as_str(), stored.chat_id.as_str());
        let reference = MessageRef::Id(stored.id);
        let reply_to = stored
            .reply_to
            .as_ref()
            .map(|reply| reply.provider_message_id.as_str());
        let sent = if stored.attachments.is_empty() {
            source
                .send(chat_id, &stored.text, reply_to, client_message_id)
                .await
        } else {
            let files = self.read_attachments(&stored.attachments).await?;
            source
                .send_files(chat_id, &stored.text, &files, reply_to, client_message_id)
                .await
        };
        match sent {
            Ok(receipt) => {
                let (sent, _) = store
                    .update_status(
                        session_id,
                        &reference,
                        MessageStatus::Sent,
                        Some(&receipt.provider_message_id),
                    )
                    .await?;
                // Statuses that beat this answer without naming the send wait in the inbox,
                // under the wamid it gives.
                if source.whatsapp_cloud().is_some() {
                    self.apply_waiting_statuses_of(session_id, &receipt.provider_message_id)
                        .await?;
                }
                Ok((sent, false))
            }
            Err(error) => {
                tracing::warn!(session_id, chat_id, %error, "source rejected the send");
                // The source's own code and title (a Graph error), if it gave them, stay on
                // the FAILED status and its `status_updated` event.
                store
                    .update_status_because(
                        session_id,
                        &reference,
                        MessageStatus::Failed,
                        None,
                        error.reason(),
                    )
                    .await?;
                Err(error.into())
            }
        }
    }

    /// Puts the bytes of uploaded files in the blob store; their attachments, stored.
    pub(super) async fn store_uploads(
        &self,
        uploads: Vec<AttachmentUpload>,
    ) -> Result<Vec<model::Attachment>> {
        let mut attachments = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let mime_type = if upload.mime_type.is_empty() {
                sources::media::mime_for(&upload.file_name).to_owned()
            } else {
                upload.mime_type
            };
            let blob = self
                .inner
                .blobs
                .put(upload.data)
                .await
                .map_err(|error| Error::Internal(format!("cannot store a file: {error}")))?;
            attachments.push(model::Attachment {
                file_name: upload.file_name,
                mime_type,
                size_bytes: blob.size,
                sha256: blob.sha256,
                stored: true,
            });
        }
        Ok(attachments)
    }

    /// The bytes of stored attachments, read back from the blob store (to send them).
    pub(super) async fn read_attachments(
        &self,
        attachments: &[model::Attachment],
    ) -> Result<Vec<(model::Attachment, Vec<u8>)>> {
        use tokio_stream::StreamExt;
        let mut files = Vec::with_capacity(attachments.len());
        for attachment in attachments {
            let internal =
                |error: std::io::Error| Error::Internal(format!("cannot read a file: {error}"));
            let Some((size, mut chunks)) = self
                .inner
                .blobs
                .get(&attachment.sha256)
                .await
                .map_err(internal)?
            else {
                return Err(Error::Internal(format!(
                    "blob {} is missing from the blob store",
                    attachment.sha256
                )));
            };
            let mut bytes = Vec::with_capacity(size as usize);
            while let Some(chunk) = chunks.next().await {
                bytes.extend(chunk.map_err(internal)?);
            }
            files.push((attachment.clone(), bytes));
        }
        Ok(files)
    }

    /// Records a receipt. A status that is not ahead of the stored one changes nothing.
    pub async fn update_status(
        &self,
        session_id: &str,
        reference: MessageRef,
        status: MessageStatus,
    ) -> Result<(Message, bool)> {
        let source = self.source(session_id)?;
        if status == MessageStatus::Pending {
            return Err(Error::InvalidArgument(
                "status must be SENT, DELIVERED, READ or FAILED".into(),
            ));
        }
        let (message, changed) = self
            .inner
            .store
            .update_status(session_id, &reference, status, None)
            .await?;
        // On a two-way source, reading an incoming message is said upstream too, on every READ
        // (so a READ repeated after a failed receipt says it again). The local change stands
        // even when that fails.
        if message.status == MessageStatus::Read
            && status == MessageStatus::Read
            && !message.from_me
            && let Err(error) = source
                .mark_read(&message.chat_id, &message.provider_message_id)
                .await
        {
            tracing::warn!(session_id, %error, "cannot send the read receipt upstream");
        }
        Ok((message, changed))
    }

    /// The bytes of a stored attachment of this session: its MIME type, size and bytes in
    /// chunks of at most [`crate::blobs::CHUNK_BYTES`]. `sha256` is 64 hex digits (either
    /// case).
    ///
    /// Errors: `InvalidArgument` for a malformed hash; `NotFound` for an unknown session, or
    /// a hash that no attachment of this session references with its bytes stored (a session
    /// never reads another session's media), or whose blob is gone from the store.
    pub async fn get_media(
        &self,
        session_id: &str,
        sha256: &str,
    ) -> Result<(String, u64, ChunkStream)> {
        self.source(session_id)?;
        let sha256 = sha256.to_ascii_lowercase();
        if !is_sha256(&sha256) {
            return Err(Error::InvalidArgument(
                "sha256 must be 64 hexadecimal digits".into(),
            ));
        }
        let not_found = || Error::NotFound(format!("media {sha256} in session {session_id:?}"));
        let Some(mime_type) = self.inner.store.session_media(session_id, &sha256).await? else {
            return Err(not_found());
        };
        match self.inner.blobs.get(&sha256).await {
            Ok(Some((size, chunks))) => Ok((mime_type, size, chunks)),
            Ok(None) => {
                tracing::warn!(
                    session_id,
                    sha256,
                    "an attachment's blob is missing from the blob store"
                );
                Err(not_found())
            }
            Err(error) => Err(Error::Internal(format!(
                "cannot read blob {sha256}: {error}"
            ))),
        }
    }
}

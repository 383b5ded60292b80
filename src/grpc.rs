//! The gRPC adapter: the only module that sees prost types.
//!
//! Authentication happens before a handler runs ([`crate::auth::AuthLayer`]); each handler
//! checks the request's scope against its session, converts the request into domain terms, calls
//! [`ChatSync`], and converts the result. Domain errors become gRPC statuses in exactly one
//! place, [`status_from`]. Every handler runs in a tracing span carrying `session_id`.
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::{self, Scope};
use crate::error::Error;
use crate::model::{self, MessageStatus};
use crate::service::{
    ChatSync, Event, Progress, SearchRequest, Stage, SubscribeRequest, SyncStatus,
};
use crate::sources::SourceState;
use crate::storage::{MessageRef, SyncState};

/// Generated protobuf types and service stubs (`chatsync.v1`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("chatsync.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/chatsync_descriptor.bin"));
}

use pb::chat_sync_service_server::ChatSyncService;

/// The codec of the generated client and server (`build.rs` names it): prost, with a smaller
/// first encode buffer than tonic's 8 KiB.
pub mod codec {
    use std::marker::PhantomData;

    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::ProstCodec;

    /// Bytes a response stream's encode buffer starts with. Every open SubscribeMessages stream
    /// holds one for its whole life, and most events (a message, a status change, a heartbeat)
    /// take a few hundred bytes; the buffer grows for larger messages.
    pub const ENCODE_BUFFER_BYTES: usize = 1024;
    /// tonic's default: encoded messages are handed to the transport once this many bytes are
    /// buffered.
    const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

    /// [`ProstCodec`] with an encode buffer of [`ENCODE_BUFFER_BYTES`]; decoding is unchanged.
    #[derive(Debug, Clone, Copy)]
    pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for SmallBufferCodec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> Codec for SmallBufferCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
        type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

        fn encoder(&mut self) -> Self::Encoder {
            ProstCodec::<T, U>::raw_encoder(BufferSettings::new(
                ENCODE_BUFFER_BYTES,
                YIELD_THRESHOLD_BYTES,
            ))
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstCodec::<T, U>::default().decoder()
        }
    }
}

/// Maps a domain error to its gRPC status (DESIGN.md, Errors). The only such mapping.
pub fn status_from(error: Error) -> Status {
    match error {
        Error::InvalidArgument(m) => Status::invalid_argument(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::Unauthenticated(m) => Status::unauthenticated(m),
        Error::PermissionDenied(m) => Status::permission_denied(m),
        Error::FailedPrecondition(m) => Status::failed_precondition(m),
        Error::Unavailable(m) => Status::unavailable(m),
        Error::ResourceExhausted(m) => Status::resource_exhausted(m),
        // The cause stays in the log: a client sees only an id to quote.
        error @ (Error::Storage(_) | Error::Internal(_)) => Status::internal(error.public_text()),
    }
}

/// The tonic service. Mounted behind [`crate::auth::AuthLayer`], which puts each request's
/// [`Scope`] into its extensions.
#[derive(Clone)]
pub struct Api {
    service: ChatSync,
    /// Server-wide SubscribeMessages slots (`max_subscriptions`).
    subscriptions: Arc<Semaphore>,
    max_subscriptions: u32,
}

impl Api {
    /// The adapter over `service`, holding at most `max_subscriptions` open subscriptions.
    pub fn new(service: ChatSync, max_subscriptions: u32) -> Self {
        Self {
            service,
            subscriptions: Arc::new(Semaphore::new(max_subscriptions as usize)),
            max_subscriptions,
        }
    }

    /// The request's scope, which must cover `session_id`: UNAUTHENTICATED without one,
    /// PERMISSION_DENIED outside it.
    fn authorize<T>(&self, request: &Request<T>, session_id: &str) -> Result<Scope, Status> {
        let scope = auth::scope(request)?;
        scope.check(session_id).map_err(status_from)?;
        Ok(scope)
    }

    /// A server-wide slot and, when the token has a limit, one of the token's; both are
    /// released when the returned permits drop. RESOURCE_EXHAUSTED when either is full.
    fn subscription_slots(&self, scope: &Scope) -> Result<Vec<OwnedSemaphorePermit>, Status> {
        let token_slot = scope.subscription_slot().map_err(status_from)?;
        let server_slot = self
            .subscriptions
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                status_from(Error::ResourceExhausted(format!(
                    "the server holds its maximum of {} open subscriptions; retry later",
                    self.max_subscriptions
                )))
            })?;
        Ok(std::iter::once(server_slot).chain(token_slot).collect())
    }
}

/// A stream that holds subscription slots until it ends or is dropped (the client went
/// away, or the server ended it).
struct WithSlots<S> {
    inner: S,
    slots: Vec<OwnedSemaphorePermit>,
}

impl<S: Stream + Unpin> Stream for WithSlots<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(None) = next {
            self.slots.clear();
        }
        next
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ChatSyncService for Api {
    type SyncChatsStream = BoxStream<pb::SyncChatsResponse>;
    type SubscribeMessagesStream = BoxStream<pb::SubscribeMessagesResponse>;
    type GetMediaStream = BoxStream<pb::GetMediaResponse>;
    type GetSnapshotStream = BoxStream<pb::GetSnapshotResponse>;

    async fn sync_chats(
        &self,
        request: Request<pb::SyncChatsRequest>,
    ) -> Result<Response<Self::SyncChatsStream>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("SyncChats", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let limit = request.get_ref().limit_per_chat;
            let since_ms = request.get_ref().since.as_ref().map(timestamp_ms).transpose().map_err(status_from)?;
            let mut attachment = self
                .service
                .sync_chats_since(&session_id, limit, since_ms)
                .await
                .map_err(status_from)?;
            let (sender, receiver) = mpsc::channel(64);
            let mut shutdown = self.service.shutdown();
            // Forwards frames until the run ends, the client goes or the server shuts down;
            // the run itself goes on.
            tokio::spawn(
                async move {
                    let mut pending = attachment.snapshot.take();
                    loop {
                        let frame = match pending.take() {
                            Some(frame) => frame,
                            None => tokio::select! {
                                next = attachment.frames.recv() => match next {
                                    Ok(frame) => frame,
                                    Err(RecvError::Lagged(skipped)) => {
                                        tracing::debug!(skipped, "slow SyncChats client skipped frames");
                                        continue;
                                    }
                                    Err(RecvError::Closed) => {
                                        // The run ended without an outcome: the replica
                                        // running it stopped, and it is INTERRUPTED.
                                        let _ = sender.try_send(Err(Status::unavailable(
                                            "the sync run was interrupted: the server running it stopped; sync again to resume",
                                        )));
                                        return;
                                    }
                                },
                                _ = crate::service::stopped(&mut shutdown) => {
                                    let _ = sender.try_send(Err(Status::unavailable("the server is shutting down")));
                                    return;
                                }
                            },
                        };
                        let stage = frame.stage;
                        let error = frame.error.clone();
                        if sender.send(Ok(progress_to_pb(frame))).await.is_err() {
                            tracing::debug!("SyncChats client went away; the run goes on");
                            return;
                        }
                        match stage {
                            Stage::Completed => return,
                            Stage::Failed => {
                                let _ = sender
                                    .send(Err(Status::failed_precondition(format!("sync run failed: {error}"))))
                                    .await;
                                return;
                            }
                            _ => {}
                        }
                    }
                }
                .in_current_span(),
            );
            let stream = ReceiverStream::new(receiver);
            Ok(Response::new(Box::pin(stream) as Self::SyncChatsStream))
        }
        .instrument(span)
        .await
    }

    async fn subscribe_messages(
        &self,
        request: Request<pb::SubscribeMessagesRequest>,
    ) -> Result<Response<Self::SubscribeMessagesStream>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("SubscribeMessages", session_id);
        async {
            let scope = self.authorize(&request, &session_id)?;
            let slots = self.subscription_slots(&scope)?;
            let body = request.into_inner();
            let events = self
                .service
                .subscribe(SubscribeRequest {
                    session_id: body.session_id,
                    chat_ids: body.chat_ids,
                    after_seq: body.after_seq,
                })
                .await
                .map_err(status_from)?;
            let stream = events.map(|event| event.map(event_to_pb).map_err(status_from));
            let stream = WithSlots {
                inner: stream,
                slots,
            };
            Ok(Response::new(
                Box::pin(stream) as Self::SubscribeMessagesStream
            ))
        }
        .instrument(span)
        .await
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("SendMessage", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let body = request.into_inner();
            let uploads = body
                .attachments
                .into_iter()
                .map(|file| model::AttachmentUpload {
                    file_name: file.file_name,
                    mime_type: file.mime_type,
                    data: file.data,
                })
                .collect();
            let (message, duplicate) = self
                .service
                .send_message_with(
                    &body.session_id,
                    &body.chat_id,
                    &body.text,
                    &body.client_message_id,
                    uploads,
                )
                .await
                .map_err(status_from)?;
            Ok(Response::new(pb::SendMessageResponse {
                message: Some(message_to_pb(message)),
                duplicate,
            }))
        }
        .instrument(span)
        .await
    }

    async fn get_sync_status(
        &self,
        request: Request<pb::GetSyncStatusRequest>,
    ) -> Result<Response<pb::GetSyncStatusResponse>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("GetSyncStatus", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let status = self
                .service
                .sync_status(&session_id)
                .await
                .map_err(status_from)?;
            Ok(Response::new(sync_status_to_pb(status)))
        }
        .instrument(span)
        .await
    }

    async fn list_chats(
        &self,
        request: Request<pb::ListChatsRequest>,
    ) -> Result<Response<pb::ListChatsResponse>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("ListChats", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let body = request.into_inner();
            let page = self
                .service
                .list_chats(&body.session_id, body.after_seq, body.limit)
                .await
                .map_err(status_from)?;
            Ok(Response::new(pb::ListChatsResponse {
                chats: page.items.into_iter().map(chat_to_pb).collect(),
                next_seq: page.next_seq,
                has_more: page.has_more,
            }))
        }
        .instrument(span)
        .await
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("ListMessages", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let body = request.into_inner();
            let chat_id = Some(body.chat_id.as_str()).filter(|c| !c.is_empty());
            let before_seq = Some(body.before_seq).filter(|seq| *seq != 0);
            let page = self
                .service
                .list_messages(
                    &body.session_id,
                    chat_id,
                    body.after_seq,
                    before_seq,
                    body.limit,
                )
                .await
                .map_err(status_from)?;
            Ok(Response::new(pb::ListMessagesResponse {
                messages: page.items.into_iter().map(message_to_pb).collect(),
                next_seq: page.next_seq,
                has_more: page.has_more,
            }))
        }
        .instrument(span)
        .await
    }

    async fn update_message_status(
        &self,
        request: Request<pb::UpdateMessageStatusRequest>,
    ) -> Result<Response<pb::UpdateMessageStatusResponse>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("UpdateMessageStatus", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let body = request.into_inner();
            let reference = if body.message_id != 0 {
                MessageRef::Id(body.message_id as i64)
            } else if !body.chat_id.is_empty() && !body.provider_message_id.is_empty() {
                MessageRef::Provider {
                    chat_id: body.chat_id,
                    provider_message_id: body.provider_message_id,
                }
            } else {
                return Err(status_from(Error::InvalidArgument(
                    "name the message by message_id, or by chat_id and provider_message_id".into(),
                )));
            };
            let status = status_from_pb(body.status).map_err(status_from)?;
            let (message, changed) = self
                .service
                .update_status(&body.session_id, reference, status)
                .await
                .map_err(status_from)?;
            Ok(Response::new(pb::UpdateMessageStatusResponse {
                message: Some(message_to_pb(message)),
                changed,
            }))
        }
        .instrument(span)
        .await
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let span = tracing::info_span!("ListSessions");
        async {
            let scope = auth::scope(&request)?;
            let sessions = self
                .service
                .sessions()
                .into_iter()
                .filter(|(id, _)| scope.allows(id))
                .map(|(session_id, source)| pb::SessionSummary { session_id, source })
                .collect();
            Ok(Response::new(pb::ListSessionsResponse { sessions }))
        }
        .instrument(span)
        .await
    }

    async fn get_media(
        &self,
        request: Request<pb::GetMediaRequest>,
    ) -> Result<Response<Self::GetMediaStream>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("GetMedia", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let body = request.into_inner();
            let (mime_type, size, chunks) = self
                .service
                .get_media(&body.session_id, &body.sha256)
                .await
                .map_err(status_from)?;
            // The first frame carries the MIME type and size; an empty blob is that frame alone.
            let empty = (size == 0).then(|| {
                Ok(pb::GetMediaResponse {
                    data: Vec::new(),
                    mime_type: mime_type.clone(),
                    total_size_bytes: 0,
                })
            });
            let mut first = Some((mime_type, size));
            let frames = chunks.map(move |chunk| {
                let data = chunk.map_err(|error| {
                    status_from(Error::Internal(format!("cannot read a blob: {error}")))
                })?;
                let (mime_type, total_size_bytes) = first.take().unwrap_or_default();
                Ok(pb::GetMediaResponse {
                    data,
                    mime_type,
                    total_size_bytes,
                })
            });
            let stream: Self::GetMediaStream = Box::pin(tokio_stream::iter(empty).chain(frames));
            Ok(Response::new(stream))
        }
        .instrument(span)
        .await
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<Self::GetSnapshotStream>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("GetSnapshot", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let body = request.into_inner();
            let since_ms = body
                .since
                .as_ref()
                .map(timestamp_ms)
                .transpose()
                .map_err(status_from)?;
            let frames = self
                .service
                .snapshot(
                    &body.session_id,
                    &body.chat_ids,
                    body.limit_per_chat,
                    since_ms,
                )
                .await
                .map_err(status_from)?;
            let stream = frames.map(|frame| {
                frame
                    .map(|frame| pb::GetSnapshotResponse {
                        head_seq: frame.head_seq,
                        chat: frame.chat.map(chat_to_pb),
                        messages: frame.messages.into_iter().map(message_to_pb).collect(),
                        unread_count: frame.unread_count,
                        has_more: frame.has_more,
                        n_chats: frame.n_chats,
                    })
                    .map_err(status_from)
            });
            Ok(Response::new(Box::pin(stream) as Self::GetSnapshotStream))
        }
        .instrument(span)
        .await
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("ListContacts", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let body = request.into_inner();
            let page = self
                .service
                .list_contacts(&body.session_id, body.after_seq, body.limit)
                .await
                .map_err(status_from)?;
            Ok(Response::new(pb::ListContactsResponse {
                contacts: page.items.into_iter().map(contact_to_pb).collect(),
                next_seq: page.next_seq,
                has_more: page.has_more,
            }))
        }
        .instrument(span)
        .await
    }

    async fn list_participants(
        &self,
        request: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("ListParticipants", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let body = request.into_inner();
            let chat_id = Some(body.chat_id.as_str()).filter(|c| !c.is_empty());
            let page = self
                .service
                .list_participants(&body.session_id, chat_id, body.after_seq, body.limit)
                .await
                .map_err(status_from)?;
            Ok(Response::new(pb::ListParticipantsResponse {
                participants: page.items.into_iter().map(participant_to_pb).collect(),
                next_seq: page.next_seq,
                has_more: page.has_more,
            }))
        }
        .instrument(span)
        .await
    }

    async fn search_messages(
        &self,
        request: Request<pb::SearchMessagesRequest>,
    ) -> Result<Response<pb::SearchMessagesResponse>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let span = tracing::info_span!("SearchMessages", session_id);
        async {
            self.authorize(&request, &session_id)?;
            let body = request.into_inner();
            let sent_after_ms = body
                .sent_after
                .as_ref()
                .map(timestamp_ms)
                .transpose()
                .map_err(status_from)?;
            let sent_before_ms = body
                .sent_before
                .as_ref()
                .map(timestamp_ms)
                .transpose()
                .map_err(status_from)?;
            let page = self
                .service
                .search_messages(SearchRequest {
                    session_id: body.session_id,
                    query: body.query,
                    chat_ids: body.chat_ids,
                    sent_after_ms,
                    sent_before_ms,
                    limit: body.limit,
                    page_token: body.page_token,
                })
                .await
                .map_err(status_from)?;
            Ok(Response::new(pb::SearchMessagesResponse {
                hits: page
                    .hits
                    .into_iter()
                    .map(|hit| pb::SearchHit {
                        message: Some(message_to_pb(hit.message)),
                        snippet: hit.snippet,
                        score: hit.score,
                    })
                    .collect(),
                next_page_token: page.next_page_token,
            }))
        }
        .instrument(span)
        .await
    }
}

/// A request's timestamp as Unix milliseconds (sub-millisecond parts round down).
/// `InvalidArgument` for one outside the range of a valid timestamp (years 1 to 9999) or with
/// nanos outside 0..1e9.
fn timestamp_ms(value: &prost_types::Timestamp) -> Result<i64, Error> {
    // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, as protobuf's Timestamp defines its range.
    const MIN_SECONDS: i64 = -62_135_596_800;
    const MAX_SECONDS: i64 = 253_402_300_799;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&value.seconds)
        || !(0..1_000_000_000).contains(&value.nanos)
    {
        return Err(Error::InvalidArgument(format!(
            "timestamp {}s {}ns is not a valid instant",
            value.seconds, value.nanos
        )));
    }
    Ok(value.seconds * 1_000 + i64::from(value.nanos / 1_000_000))
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn status_from_pb(value: i32) -> Result<MessageStatus, Error> {
    match pb::MessageStatus::try_from(value) {
        Ok(pb::MessageStatus::Pending) => Ok(MessageStatus::Pending),
        Ok(pb::MessageStatus::Sent) => Ok(MessageStatus::Sent),
        Ok(pb::MessageStatus::Delivered) => Ok(MessageStatus::Delivered),
        Ok(pb::MessageStatus::Read) => Ok(MessageStatus::Read),
        Ok(pb::MessageStatus::Failed) => Ok(MessageStatus::Failed),
        _ => Err(Error::InvalidArgument(format!(
            "status {value} is not a message status"
        ))),
    }
}

fn status_to_pb(status: MessageStatus) -> pb::MessageStatus {
    match status {
        MessageStatus::Pending => pb::MessageStatus::Pending,
        MessageStatus::Sent => pb::MessageStatus::Sent,
        MessageStatus::Delivered => pb::MessageStatus::Delivered,
        MessageStatus::Read => pb::MessageStatus::Read,
        MessageStatus::Failed => pb::MessageStatus::Failed,
    }
}

fn kind_to_pb(kind: model::MessageKind) -> pb::MessageKind {
    match kind {
        model::MessageKind::Text => pb::MessageKind::Text,
        model::MessageKind::System => pb::MessageKind::System,
        model::MessageKind::Media => pb::MessageKind::Media,
        model::MessageKind::Deleted => pb::MessageKind::Deleted,
    }
}

fn message_to_pb(message: model::Message) -> pb::Message {
    pb::Message {
        id: message.id as u64,
        session_id: message.session_id,
        chat_id: message.chat_id,
        provider_message_id: message.provider_message_id,
        client_message_id: message.client_message_id.unwrap_or_default(),
        sender: message.sender,
        text: message.text,
        kind: kind_to_pb(message.kind) as i32,
        status: status_to_pb(message.status) as i32,
        sent_at: Some(timestamp(message.sent_at_ms)),
        seq: message.seq,
        from_me: message.from_me,
        attachments: message
            .attachments
            .into_iter()
            .map(|file| pb::Attachment {
                file_name: file.file_name,
                mime_type: file.mime_type,
                size_bytes: file.size_bytes,
                sha256: file.sha256,
                stored: file.stored,
            })
            .collect(),
    }
}

fn chat_to_pb(chat: model::Chat) -> pb::Chat {
    pb::Chat {
        chat_id: chat.chat_id,
        name: chat.name,
        seq: chat.seq,
    }
}

fn contact_to_pb(contact: model::Contact) -> pb::Contact {
    pb::Contact {
        contact_id: contact.contact_id,
        display_name: contact.display_name,
        phone: contact.phone.unwrap_or_default(),
        matrix_id: contact.matrix_id.unwrap_or_default(),
        seq: contact.seq,
    }
}

fn participant_to_pb(participant: model::Participant) -> pb::Participant {
    pb::Participant {
        chat_id: participant.chat_id,
        contact_id: participant.contact_id,
        joined_at: participant.joined_at_ms.map(timestamp),
        left_at: participant.left_at_ms.map(timestamp),
        seq: participant.seq,
    }
}

fn stage_to_pb(stage: Stage) -> pb::SyncStage {
    match stage {
        Stage::Started => pb::SyncStage::Started,
        Stage::ChatSaved => pb::SyncStage::ChatSaved,
        Stage::MessagesSaved => pb::SyncStage::MessagesSaved,
        Stage::ChatFailed => pb::SyncStage::ChatFailed,
        Stage::Completed => pb::SyncStage::Completed,
        Stage::Failed => pb::SyncStage::Failed,
    }
}

fn progress_to_pb(progress: Progress) -> pb::SyncChatsResponse {
    pb::SyncChatsResponse {
        progress: Some(progress_frame(progress)),
    }
}

fn progress_frame(progress: Progress) -> pb::SyncProgress {
    pb::SyncProgress {
        sync_id: progress.sync_id,
        session_id: progress.session_id,
        n_chats: progress.n_chats,
        current_chat: progress.current_chat,
        chat_id: progress.chat_id,
        messages_synced: progress.messages_synced,
        total_messages_synced: progress.total_messages_synced,
        stage: stage_to_pb(progress.stage) as i32,
        error: progress.error,
        unplaced_lines: progress.unplaced_lines,
        total_unplaced_lines: progress.total_unplaced_lines,
    }
}

fn sync_status_to_pb(status: SyncStatus) -> pb::GetSyncStatusResponse {
    let state = match status.state {
        SyncState::NeverSynced => pb::SyncState::NeverSynced,
        SyncState::Running => pb::SyncState::Running,
        SyncState::Succeeded => pb::SyncState::Succeeded,
        SyncState::Failed => pb::SyncState::Failed,
        SyncState::Interrupted => pb::SyncState::Interrupted,
    };
    let (source_state, source_error) = match status.source_state {
        SourceState::NotLive => (pb::SourceState::NotLive, String::new()),
        SourceState::Connecting => (pb::SourceState::Connecting, String::new()),
        SourceState::Up => (pb::SourceState::Up, String::new()),
        SourceState::Down(error) => (pb::SourceState::Down, error),
    };
    let session = status.session;
    pb::GetSyncStatusResponse {
        session_id: session.id,
        state: state as i32,
        progress: status.progress.map(progress_frame),
        started_at: session.sync_started_at_ms.map(timestamp),
        finished_at: session.sync_finished_at_ms.map(timestamp),
        last_error: session.sync_error.unwrap_or_default(),
        chat_count: status.chat_count,
        message_count: status.message_count,
        head_seq: session.head_seq,
        source: session.source,
        source_state: source_state as i32,
        source_error,
    }
}

fn event_to_pb(event: Event) -> pb::SubscribeMessagesResponse {
    use pb::subscribe_messages_response::Event as PbEvent;
    let (seq, event) = match event {
        Event::Change(change) => change_to_pb(Arc::unwrap_or_clone(change)),
        Event::Ready { head_seq } => (head_seq, PbEvent::Ready(pb::Ready { head_seq })),
        Event::Heartbeat { seq } => (
            seq,
            PbEvent::Heartbeat(pb::Heartbeat {
                server_time: Some(timestamp(model::now_ms())),
            }),
        ),
    };
    pb::SubscribeMessagesResponse {
        seq,
        event: Some(event),
    }
}

/// A change as a subscription event, with its seq.
fn change_to_pb(change: model::Change) -> (u64, pb::subscribe_messages_response::Event) {
    use pb::subscribe_messages_response::Event as PbEvent;
    match change {
        model::Change::MessageCreated(message) => {
            (message.seq, PbEvent::MessageCreated(message_to_pb(message)))
        }
        model::Change::StatusUpdated(update) => (
            update.seq,
            PbEvent::StatusUpdated(pb::StatusUpdated {
                message_id: update.message_id as u64,
                chat_id: update.chat_id,
                provider_message_id: update.provider_message_id,
                status: status_to_pb(update.status) as i32,
                updated_at: Some(timestamp(update.updated_at_ms)),
            }),
        ),
        model::Change::ChatUpdated(chat) => (chat.seq, PbEvent::ChatUpdated(chat_to_pb(chat))),
        model::Change::MessageUpdated { seq, message } => {
            (seq, PbEvent::MessageUpdated(message_to_pb(message)))
        }
        model::Change::ContactUpdated { seq, contact } => (
            seq,
            PbEvent::ContactUpdated(pb::ContactUpdated {
                contact: Some(contact_to_pb(contact)),
            }),
        ),
        model::Change::ParticipantsChanged { seq, participant } => (
            seq,
            PbEvent::ParticipantsChanged(pb::ParticipantsChanged {
                chat_id: participant.chat_id.clone(),
                participants: vec![participant_to_pb(participant)],
            }),
        ),
    }
}

/// The methods of `chatsync.v1.ChatSyncService`, read from the compiled descriptor (so the
/// list follows the proto). The metrics label RPCs with these names and nothing else.
pub fn rpc_method_names() -> Vec<String> {
    use prost::Message as _;
    let Ok(set) = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    set.file
        .iter()
        .filter(|file| file.package() == "chatsync.v1")
        .flat_map(|file| &file.service)
        .filter(|service| service.name() == "ChatSyncService")
        .flat_map(|service| &service.method)
        .map(|method| method.name().to_owned())
        .collect()
}

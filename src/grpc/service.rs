//! The handlers of `chatsync.v1.ChatSyncService`. Each is one [`Api::rpc`] call: the helper
//! gives it its span, checks the token's scope against the request's session, and maps the
//! handler's domain error through [`status_from`]; the handler converts the request into
//! domain terms, calls [`ChatSync`](crate::service::ChatSync), and converts the result
//! ([`super::convert`]).
use std::future::Future;

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::Scope;
use crate::error::Error;
use crate::model::{ClientMessageId, MessageRef};
use crate::service::{
    ChangeAnswer, ChangeRequest, ClientChange, SearchRequest, SendRequest, SubscribeRequest,
};

use super::convert::*;
use super::pb::{self, chat_sync_service_server::ChatSyncService};
use super::{Api, BoxStream, WithSlots, scope, status_from};

/// What a request is scoped to: one session, or (`None`: ListSessions) the token's whole scope.
pub(super) trait Scoped {
    fn session_id(&self) -> Option<&str>;
}

macro_rules! scoped_to_session {
    ($($request:ident),* $(,)?) => {$(
        impl Scoped for pb::$request {
            fn session_id(&self) -> Option<&str> {
                Some(&self.session_id)
            }
        }
    )*};
}

scoped_to_session!(
    SyncChatsRequest,
    SubscribeMessagesRequest,
    SendMessageRequest,
    GetSyncStatusRequest,
    ListChatsRequest,
    ListMessagesRequest,
    UpdateMessageStatusRequest,
    GetMediaRequest,
    GetSnapshotRequest,
    ListContactsRequest,
    ListParticipantsRequest,
    SearchMessagesRequest,
    ReactToMessageRequest,
    EditMessageRequest,
    DeleteMessageRequest,
    ReplayWebhookRequest,
);

impl Scoped for pb::GetWebhookStatusRequest {
    fn session_id(&self) -> Option<&str> {
        (!self.session_id.is_empty()).then_some(self.session_id.as_str())
    }
}

impl Scoped for pb::ListSessionsRequest {
    fn session_id(&self) -> Option<&str> {
        None
    }
}

impl Api {
    /// Runs one RPC: in a span `rpc{method, session_id}`, checks the scope the
    /// [`super::AuthInterceptor`] put on the request against its session (UNAUTHENTICATED,
    /// PERMISSION_DENIED), then runs `handler` with the scope and the request body; its domain
    /// error becomes a status through [`status_from`], the only mapping.
    async fn rpc<Req, Res, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        handler: impl FnOnce(Scope, Req) -> Fut,
    ) -> Result<Response<Res>, Status>
    where
        Req: Scoped,
        Fut: Future<Output = Result<Res, Error>>,
    {
        let span = tracing::info_span!("rpc", method, session_id = request.get_ref().session_id());
        async {
            let scope = scope(&request)?;
            if let Some(session_id) = request.get_ref().session_id() {
                scope.check(session_id)?;
            }
            handler(scope, request.into_inner())
                .await
                .map(Response::new)
        }
        .instrument(span)
        .await
        .map_err(status_from)
    }
}

impl Api {
    /// The shared part of ReactToMessage, EditMessage and DeleteMessage: parses the message id
    /// and the request id, and makes the change.
    async fn change(
        &self,
        session_id: String,
        message_id: u64,
        change: ClientChange,
        request_id: String,
    ) -> Result<ChangeAnswer, Error> {
        if message_id == 0 || message_id > i64::MAX as u64 {
            return Err(Error::InvalidArgument(
                "message_id must name a stored message".into(),
            ));
        }
        let request_id = ClientMessageId::parse_field("request_id", request_id)?;
        self.service
            .change_message(ChangeRequest {
                session_id,
                message_id: message_id as i64,
                change,
                request_id,
            })
            .await
    }
}

/// A request's optional timestamp as Unix milliseconds.
fn optional_ms(value: Option<&pbjson_types::Timestamp>) -> Result<Option<i64>, Error> {
    value.map(timestamp_ms).transpose()
}

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
        self.rpc("SyncChats", request, |_, body| async move {
            let since_ms = optional_ms(body.since.as_ref())?;
            let frames = self
                .service
                .sync_chats_since(&body.session_id, body.limit_per_chat, since_ms)
                .await?
                .into_stream(self.service.shutdown());
            let stream =
                frames.map(|frame| frame.map(pb::SyncChatsResponse::from).map_err(status_from));
            Ok(Box::pin(stream) as Self::SyncChatsStream)
        })
        .await
    }

    async fn subscribe_messages(
        &self,
        request: Request<pb::SubscribeMessagesRequest>,
    ) -> Result<Response<Self::SubscribeMessagesStream>, Status> {
        self.rpc("SubscribeMessages", request, |scope, body| async move {
            let slots = self.subscription_slots(&scope)?;
            let events = self
                .service
                .subscribe(SubscribeRequest {
                    session_id: body.session_id,
                    chat_ids: body.chat_ids,
                    after_seq: body.after_seq,
                })
                .await?;
            let stream = events.map(|event| {
                event
                    .map(pb::SubscribeMessagesResponse::from)
                    .map_err(status_from)
            });
            let stream = WithSlots {
                inner: stream,
                slots,
            };
            Ok(Box::pin(stream) as Self::SubscribeMessagesStream)
        })
        .await
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        self.rpc("SendMessage", request, |_, body| async move {
            let (message, duplicate) = self
                .service
                .send_message(SendRequest::try_from(body)?)
                .await?;
            Ok(pb::SendMessageResponse {
                message: Some(pb::Message::from(message)),
                duplicate,
            })
        })
        .await
    }

    async fn get_sync_status(
        &self,
        request: Request<pb::GetSyncStatusRequest>,
    ) -> Result<Response<pb::GetSyncStatusResponse>, Status> {
        self.rpc("GetSyncStatus", request, |_, body| async move {
            let status = self.service.sync_status(&body.session_id).await?;
            Ok(pb::GetSyncStatusResponse::from(status))
        })
        .await
    }

    async fn list_chats(
        &self,
        request: Request<pb::ListChatsRequest>,
    ) -> Result<Response<pb::ListChatsResponse>, Status> {
        self.rpc("ListChats", request, |_, body| async move {
            let page = self
                .service
                .list_chats(&body.session_id, body.after_seq, body.limit)
                .await?;
            Ok(pb::ListChatsResponse {
                chats: page.items.into_iter().map(pb::Chat::from).collect(),
                next_seq: page.next_seq,
                has_more: page.has_more,
            })
        })
        .await
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        self.rpc("ListMessages", request, |_, body| async move {
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
                .await?;
            Ok(pb::ListMessagesResponse {
                messages: page.items.into_iter().map(pb::Message::from).collect(),
                next_seq: page.next_seq,
                has_more: page.has_more,
            })
        })
        .await
    }

    async fn update_message_status(
        &self,
        request: Request<pb::UpdateMessageStatusRequest>,
    ) -> Result<Response<pb::UpdateMessageStatusResponse>, Status> {
        self.rpc("UpdateMessageStatus", request, |_, body| async move {
            let reference = if body.message_id != 0 {
                MessageRef::Id(body.message_id as i64)
            } else if !body.chat_id.is_empty() && !body.provider_message_id.is_empty() {
                MessageRef::Provider {
                    chat_id: body.chat_id,
                    provider_message_id: body.provider_message_id,
                }
            } else {
                return Err(Error::InvalidArgument(
                    "name the message by message_id, or by chat_id and provider_message_id".into(),
                ));
            };
            let status = status_from_pb(body.status)?;
            let (message, changed) = if body.recipient.is_empty() {
                self.service
                    .update_status(&body.session_id, reference, status)
                    .await?
            } else {
                self.service
                    .record_receipt(&body.session_id, reference, &body.recipient, status)
                    .await?
            };
            Ok(pb::UpdateMessageStatusResponse {
                message: Some(pb::Message::from(message)),
                changed,
            })
        })
        .await
    }

    async fn react_to_message(
        &self,
        request: Request<pb::ReactToMessageRequest>,
    ) -> Result<Response<pb::ReactToMessageResponse>, Status> {
        self.rpc("ReactToMessage", request, |_, body| async move {
            let answer = self
                .change(
                    body.session_id,
                    body.message_id,
                    ClientChange::React { emoji: body.emoji },
                    body.request_id,
                )
                .await?;
            Ok(pb::ReactToMessageResponse {
                message: Some(pb::Message::from(answer.message)),
                changed: answer.changed,
                duplicate: answer.duplicate,
            })
        })
        .await
    }

    async fn edit_message(
        &self,
        request: Request<pb::EditMessageRequest>,
    ) -> Result<Response<pb::EditMessageResponse>, Status> {
        self.rpc("EditMessage", request, |_, body| async move {
            let answer = self
                .change(
                    body.session_id,
                    body.message_id,
                    ClientChange::Edit { text: body.text },
                    body.request_id,
                )
                .await?;
            Ok(pb::EditMessageResponse {
                message: Some(pb::Message::from(answer.message)),
                changed: answer.changed,
                duplicate: answer.duplicate,
            })
        })
        .await
    }

    async fn get_webhook_status(
        &self,
        request: Request<pb::GetWebhookStatusRequest>,
    ) -> Result<Response<pb::GetWebhookStatusResponse>, Status> {
        self.rpc("GetWebhookStatus", request, |scope, body| async move {
            let statuses = self
                .service
                .webhooks()
                .status(
                    Some(body.webhook_id.as_str()).filter(|id| !id.is_empty()),
                    Some(body.session_id.as_str()).filter(|id| !id.is_empty()),
                    |session| scope.allows(session),
                )
                .await?;
            Ok(pb::GetWebhookStatusResponse {
                statuses: statuses.into_iter().map(pb::WebhookStatus::from).collect(),
            })
        })
        .await
    }

    async fn replay_webhook(
        &self,
        request: Request<pb::ReplayWebhookRequest>,
    ) -> Result<Response<pb::ReplayWebhookResponse>, Status> {
        self.rpc("ReplayWebhook", request, |_, body| async move {
            let previous_seq = self
                .service
                .webhooks()
                .replay(&body.webhook_id, &body.session_id, body.after_seq)
                .await?;
            Ok(pb::ReplayWebhookResponse { previous_seq })
        })
        .await
    }

    async fn delete_message(
        &self,
        request: Request<pb::DeleteMessageRequest>,
    ) -> Result<Response<pb::DeleteMessageResponse>, Status> {
        self.rpc("DeleteMessage", request, |_, body| async move {
            let answer = self
                .change(
                    body.session_id,
                    body.message_id,
                    ClientChange::Delete,
                    body.request_id,
                )
                .await?;
            Ok(pb::DeleteMessageResponse {
                message: Some(pb::Message::from(answer.message)),
                changed: answer.changed,
                duplicate: answer.duplicate,
            })
        })
        .await
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.rpc("ListSessions", request, |scope, _| async move {
            let sessions = self
                .service
                .sessions()
                .into_iter()
                .filter(|(id, _)| scope.allows(id))
                .map(|(session_id, source)| pb::SessionSummary { session_id, source })
                .collect();
            Ok(pb::ListSessionsResponse { sessions })
        })
        .await
    }

    async fn get_media(
        &self,
        request: Request<pb::GetMediaRequest>,
    ) -> Result<Response<Self::GetMediaStream>, Status> {
        self.rpc("GetMedia", request, |_, body| async move {
            let (mime_type, size, chunks) = self
                .service
                .get_media(&body.session_id, &body.sha256)
                .await?;
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
            Ok(Box::pin(tokio_stream::iter(empty).chain(frames)) as Self::GetMediaStream)
        })
        .await
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<Self::GetSnapshotStream>, Status> {
        self.rpc("GetSnapshot", request, |_, body| async move {
            let since_ms = optional_ms(body.since.as_ref())?;
            let frames = self
                .service
                .snapshot(
                    &body.session_id,
                    &body.chat_ids,
                    body.limit_per_chat,
                    since_ms,
                )
                .await?;
            let stream = frames.map(|frame| {
                frame
                    .map(pb::GetSnapshotResponse::from)
                    .map_err(status_from)
            });
            Ok(Box::pin(stream) as Self::GetSnapshotStream)
        })
        .await
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        self.rpc("ListContacts", request, |_, body| async move {
            let page = self
                .service
                .list_contacts(&body.session_id, body.after_seq, body.limit)
                .await?;
            Ok(pb::ListContactsResponse {
                contacts: page.items.into_iter().map(pb::Contact::from).collect(),
                next_seq: page.next_seq,
                has_more: page.has_more,
            })
        })
        .await
    }

    async fn list_participants(
        &self,
        request: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        self.rpc("ListParticipants", request, |_, body| async move {
            let chat_id = Some(body.chat_id.as_str()).filter(|c| !c.is_empty());
            let page = self
                .service
                .list_participants(&body.session_id, chat_id, body.after_seq, body.limit)
                .await?;
            Ok(pb::ListParticipantsResponse {
                participants: page.items.into_iter().map(pb::Participant::from).collect(),
                next_seq: page.next_seq,
                has_more: page.has_more,
            })
        })
        .await
    }

    async fn search_messages(
        &self,
        request: Request<pb::SearchMessagesRequest>,
    ) -> Result<Response<pb::SearchMessagesResponse>, Status> {
        self.rpc("SearchMessages", request, |_, body| async move {
            let page = self
                .service
                .search_messages(SearchRequest {
                    sent_after_ms: optional_ms(body.sent_after.as_ref())?,
                    sent_before_ms: optional_ms(body.sent_before.as_ref())?,
                    session_id: body.session_id,
                    query: body.query,
                    chat_ids: body.chat_ids,
                    limit: body.limit,
                    page_token: body.page_token,
                })
                .await?;
            Ok(pb::SearchMessagesResponse {
                hits: page.hits.into_iter().map(pb::SearchHit::from).collect(),
                next_page_token: page.next_page_token,
            })
        })
        .await
    }
}

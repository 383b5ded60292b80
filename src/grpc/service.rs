//! The handlers of `chatsync.v1.ChatSyncService`: each checks the request's scope against its
//! session, converts the request into domain terms, calls [`ChatSync`], and converts the
//! result ([`super::convert`]).
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::Error;
use crate::model::{self, MessageRef};
use crate::service::{SearchRequest, SubscribeRequest};

use super::convert::*;
use super::pb::{self, chat_sync_service_server::ChatSyncService};
use super::{Api, BoxStream, WithSlots, status_from};

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
            let since_ms = request
                .get_ref()
                .since
                .as_ref()
                .map(timestamp_ms)
                .transpose()
                .map_err(status_from)?;
            let frames = self
                .service
                .sync_chats_since(&session_id, limit, since_ms)
                .await
                .map_err(status_from)?
                .into_stream(self.service.shutdown());
            let stream =
                frames.map(|frame| frame.map(pb::SyncChatsResponse::from).map_err(status_from));
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
            let stream = events.map(|event| {
                event
                    .map(pb::SubscribeMessagesResponse::from)
                    .map_err(status_from)
            });
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
                message: Some(pb::Message::from(message)),
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
            Ok(Response::new(pb::GetSyncStatusResponse::from(status)))
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
                chats: page.items.into_iter().map(pb::Chat::from).collect(),
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
                messages: page.items.into_iter().map(pb::Message::from).collect(),
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
                message: Some(pb::Message::from(message)),
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
            let scope = super::scope(&request)?;
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
                        chat: frame.chat.map(pb::Chat::from),
                        messages: frame.messages.into_iter().map(pb::Message::from).collect(),
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
                contacts: page.items.into_iter().map(pb::Contact::from).collect(),
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
                participants: page.items.into_iter().map(pb::Participant::from).collect(),
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
                        message: Some(pb::Message::from(hit.message)),
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

//! The gRPC adapter: the only module that sees prost types.
//!
//! Authentication happens before a handler runs ([`AuthInterceptor`], over [`crate::auth`]);
//! each handler (`service.rs`) runs through one helper, `Api::rpc`, which gives it a tracing
//! span (`rpc{method, session_id}`) and checks the request's scope against its session; the
//! handler converts the request into domain terms (`convert.rs`), calls [`ChatSync`], and
//! converts the result. Domain errors become gRPC statuses in exactly one place,
//! [`status_from`].
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::{Request, Status};

use crate::auth::{self, Scope};
use crate::error::Error;
use crate::service::ChatSync;

/// Generated protobuf types and service stubs (`chatsync.v1`), with serde impls of the
/// protobuf JSON mapping (pbjson-build; timestamps are `pbjson_types::Timestamp`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("chatsync.v1");
    include!(concat!(env!("OUT_DIR"), "/chatsync.v1.serde.rs"));

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/chatsync_descriptor.bin"));
}

mod convert;
mod service;

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
        Error::Unavailable(m) | Error::LeaseLost(m) => Status::unavailable(m),
        Error::ResourceExhausted(m) => Status::resource_exhausted(m),
        Error::Aborted(m) => Status::aborted(m),
        // The cause stays in the log: a client sees only an id to quote.
        error @ (Error::Storage(_) | Error::Internal(_)) => Status::internal(error.public_text()),
    }
}

/// The tonic service. Mounted behind [`AuthInterceptor`], which puts each request's
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

    /// A server-wide slot and, when the token has a limit, one of the token's; both are
    /// released when the returned permits drop. RESOURCE_EXHAUSTED when either is full.
    fn subscription_slots(&self, scope: &Scope) -> Result<Vec<OwnedSemaphorePermit>, Error> {
        let token_slot = scope.subscription_slot()?;
        let server_slot = self
            .subscriptions
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Error::ResourceExhausted(format!(
                    "the server holds its maximum of {} open subscriptions; retry later",
                    self.max_subscriptions
                ))
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

/// The gRPC interceptor: runs [`auth::check`] before the request is decoded and puts the
/// [`Scope`] into the request's extensions, where [`scope`] finds it. UNAUTHENTICATED (through
/// [`status_from`]) for a missing, malformed or unknown token.
#[derive(Clone)]
pub struct AuthInterceptor {
    tokens: Arc<auth::Tokens>,
}

impl AuthInterceptor {
    /// An interceptor checking requests against `tokens`.
    pub fn new(tokens: Arc<auth::Tokens>) -> Self {
        Self { tokens }
    }
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let scope = auth::check(request.metadata().as_ref(), &self.tokens).map_err(status_from)?;
        request.extensions_mut().insert(scope);
        Ok(request)
    }
}

/// The scope [`AuthInterceptor`] put on `request`. `Unauthenticated` when there is none (a
/// service mounted without the interceptor: a wiring bug, so nothing is allowed).
pub fn scope<T>(request: &Request<T>) -> Result<Scope, Error> {
    request
        .extensions()
        .get::<Scope>()
        .cloned()
        .ok_or_else(|| Error::Unauthenticated("the request was not authenticated".into()))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_domain_error_has_its_status_code() {
        let text = || "x".to_owned();
        let table = [
            (Error::InvalidArgument(text()), Code::InvalidArgument),
            (Error::NotFound(text()), Code::NotFound),
            (Error::Unauthenticated(text()), Code::Unauthenticated),
            (Error::PermissionDenied(text()), Code::PermissionDenied),
            (Error::FailedPrecondition(text()), Code::FailedPrecondition),
            (Error::Unavailable(text()), Code::Unavailable),
            (Error::ResourceExhausted(text()), Code::ResourceExhausted),
            (Error::LeaseLost(text()), Code::Unavailable),
            (Error::Aborted(text()), Code::Aborted),
            (Error::Internal(text()), Code::Internal),
            (
                Error::Storage(sea_orm::DbErr::Custom("secret table".into())),
                Code::Internal,
            ),
            // Storage failures a retry may mend arrive classified (see `From<DbErr>`).
            (
                Error::from(sea_orm::DbErr::ConnectionAcquire(
                    sea_orm::ConnAcquireErr::Timeout,
                )),
                Code::Unavailable,
            ),
        ];
        for (error, code) in table {
            let shown = format!("{error:?}");
            let status = status_from(error);
            assert_eq!(status.code(), code, "{shown}");
            assert!(
                !status.message().contains("secret"),
                "{shown}: no database text"
            );
        }
    }
}

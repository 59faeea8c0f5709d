//! What a service is to the runtime: something that answers requests by method name.
//!
//! Services receive a [`Request`] with the raw payload and return the raw response bytes; they
//! choose their own schema (protobuf in `switchboard-proto` for Switchboard's own services).
//! Local calls hand the request over in-process; remote calls carry the same value over the link,
//! so a service cannot tell, and need not care, where its caller is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
pub use bytestring::ByteString;

use crate::error::ServiceError;

/// A request to a service or a message to a process group.
///
/// The method and trace id are [`ByteString`]s (immutable UTF-8 over [`Bytes`], read as `&str`
/// through `Deref`): a request that arrived over a link holds slices of the received frame
/// rather than copies, and cloning one for every member of a group copies nothing.
#[derive(Debug, Clone)]
pub struct Request {
    /// The operation, e.g. `post_message`.
    pub method: ByteString,
    /// The encoded request.
    pub payload: Bytes,
    /// Trace id shared by every node that handles this request.
    pub trace_id: ByteString,
}

/// The future a service returns.
pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<Bytes, ServiceError>> + Send>>;

/// A service's answer to one request: given at once, or a future for one that has to wait.
pub enum Answer {
    /// The reply, ready without waiting.
    Now(Result<Bytes, ServiceError>),
    /// The reply to come.
    Later(ServiceFuture),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Now(result) => f.debug_tuple("Now").field(result).finish(),
            Answer::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// A service: answers requests, whether they come from this node or another.
pub trait Service: Send + Sync + 'static {
    /// Handles one request. Casts use the same entry point and drop the reply.
    fn handle(&self, request: Request) -> ServiceFuture;

    /// Answers one request, at once if the service can: what a local call uses.
    ///
    /// A boxed future costs an allocation and a free, a fifth of a local call to a service that
    /// answers from memory; [`Immediate`] services skip it here.
    fn answer(&self, request: Request) -> Answer {
        Answer::Later(self.handle(request))
    }
}

impl<F, Fut> Service for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, ServiceError>> + Send + 'static,
{
    fn handle(&self, request: Request) -> ServiceFuture {
        Box::pin(self(request))
    }
}

/// A service that never waits: `Immediate(|request| ...)` answers from a plain function.
///
/// Local calls to it run the function in place, with no future to allocate (see
/// [`Service::answer`]); remote calls get the same answer.
#[derive(Debug, Clone)]
pub struct Immediate<F>(pub F);

impl<F> Service for Immediate<F>
where
    F: Fn(Request) -> Result<Bytes, ServiceError> + Send + Sync + 'static,
{
    fn handle(&self, request: Request) -> ServiceFuture {
        Box::pin(std::future::ready((self.0)(request)))
    }

    fn answer(&self, request: Request) -> Answer {
        Answer::Now((self.0)(request))
    }
}

/// A shared, type-erased service.
pub type SharedService = Arc<dyn Service>;

/// A member of a process group on this node: receives every broadcast to the group.
pub trait GroupMember: Send + Sync + 'static {
    /// Delivers one broadcast. It must not block: hand work to a task or a bounded queue.
    fn deliver(&self, message: Request);
}

impl<F> GroupMember for F
where
    F: Fn(Request) + Send + Sync + 'static,
{
    fn deliver(&self, message: Request) {
        self(message)
    }
}

/// A shared, type-erased group member.
pub type SharedGroupMember = Arc<dyn GroupMember>;

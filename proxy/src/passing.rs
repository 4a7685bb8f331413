//! Passing a client's request stream on to another gRPC server (the function, or
//! a sidecar) so that trouble on the client's side cancels the call downstream
//! instead of ending it: a stream that ends normally tells the receiver the
//! client is done, which a failed or abandoned call is not. The requests go out
//! as `Some(request)`; `None` (once) makes the [`Abortable`] codec fail the
//! encoding, which resets the HTTP/2 stream, and the receiver sees CANCELLED.

use futures::{stream::BoxStream, StreamExt};
use prost_types::Any;
use tokio::sync::oneshot;
use tonic::{
    codec::{Codec, EncodeBuf, Encoder},
    Status,
};

use crate::{call::Requests, error::ProxyError};

/// The requests to pass on, and the error (if any) that ended the client's
/// stream early. The passed-on stream aborts when the client's stream fails, or
/// when `stop` fires (whoever reads the answers went away).
pub fn pass_on(
    requests: Requests,
    stop: oneshot::Receiver<()>,
) -> (BoxStream<'static, Option<Any>>, BoxStream<'static, ProxyError>) {
    let (refuse, refused) = oneshot::channel::<ProxyError>();
    struct State {
        requests: Requests,
        stop: oneshot::Receiver<()>,
        refuse: Option<oneshot::Sender<ProxyError>>,
        done: bool,
    }
    let state = State {
        requests,
        stop,
        refuse: Some(refuse),
        done: false,
    };
    let passed = futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let next = tokio::select! {
            next = state.requests.next() => next,
            _ = &mut state.stop => {
                state.done = true;
                return Some((None, state));
            }
        };
        match next {
            Some(Ok(payload)) => Some((Some(payload), state)),
            Some(Err(error)) => {
                if let Some(refuse) = state.refuse.take() {
                    let _ = refuse.send(error);
                }
                state.done = true;
                Some((None, state))
            }
            None => None,
        }
    });
    let refused = futures::stream::once(refused).filter_map(|error| async move { error.ok() });
    (passed.boxed(), refused.boxed())
}

/// A codec whose encoder fails on `None`, so the call is reset (cancelled)
/// rather than ended.
#[derive(Clone, Default)]
pub struct Abortable<C>(pub C);

pub struct AbortableEncoder<E>(E);

impl<C: Codec> Codec for Abortable<C> {
    type Encode = Option<C::Encode>;
    type Decode = C::Decode;
    type Encoder = AbortableEncoder<C::Encoder>;
    type Decoder = C::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        AbortableEncoder(self.0.encoder())
    }

    fn decoder(&mut self) -> Self::Decoder {
        self.0.decoder()
    }
}

impl<E: Encoder<Error = Status>> Encoder for AbortableEncoder<E> {
    type Item = Option<E::Item>;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Some(item) => self.0.encode(item, dst),
            None => Err(Status::cancelled("the caller went away")),
        }
    }
}

/// Prost messages with the given buffer sizes (tonic's defaults unless set).
pub struct Prost<In, Out> {
    buffers: tonic::codec::BufferSettings,
    types: std::marker::PhantomData<(In, Out)>,
}

impl<In, Out> Prost<In, Out> {
    pub fn with_buffers(buffers: tonic::codec::BufferSettings) -> Self {
        Self {
            buffers,
            types: std::marker::PhantomData,
        }
    }
}

impl<In, Out> Default for Prost<In, Out> {
    fn default() -> Self {
        Self::with_buffers(tonic::codec::BufferSettings::default())
    }
}

impl<In, Out> Codec for Prost<In, Out>
where
    In: prost::Message + Send + 'static,
    Out: prost::Message + Default + Send + 'static,
{
    type Encode = In;
    type Decode = Out;
    type Encoder = tonic_prost::ProstEncoder<In>;
    type Decoder = tonic_prost::ProstDecoder<Out>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(self.buffers)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(self.buffers)
    }
}

/// Keeps `guard` alive as long as `stream`.
pub fn holding<T: Send + 'static, G: Send + 'static>(stream: BoxStream<'static, T>, guard: G) -> BoxStream<'static, T> {
    stream
        .map(move |item| {
            let _held = &guard;
            item
        })
        .boxed()
}

//! The protobuf codec of every trustpool RPC: prost's, with small buffers.
//!
//! tonic gives every RPC an encode and a decode buffer of 8 KiB by default,
//! allocated when the stream opens and kept for its life. A trustpool
//! session is one long bidirectional stream per host whose messages are
//! small (challenges and verdicts a few hundred bytes, evidence without
//! event logs a few KB), so at fleet scale those two buffers were 16 KiB of every
//! connected host's memory on the server (docs/PERFORMANCE.md). Buffers
//! start at [`BUFFER_SIZE`] and grow as a message needs, so a large evidence
//! message (event logs) still decodes in one piece.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial size of a stream's encode and decode buffers.
pub const BUFFER_SIZE: usize = 1024;

/// A stream yields to the transport once this many bytes are encoded
/// (tonic's default).
pub const YIELD_THRESHOLD: usize = 32 * 1024;

/// The settings every trustpool stream uses.
pub fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// [`tonic_prost::ProstCodec`] with [`buffer_settings`]; named as the codec
/// of the generated clients and servers (`build.rs`).
#[derive(Debug, Clone)]
pub struct SmallBufferCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}

//! A layer's uncompressed stream, decoded on a thread of its own and hashed on another, so that decompression,
//! hashing and the tar walk (with its file writes) each get a core instead of taking turns on one.
//!
//! The decoder fills [`CHUNK`]-sized buffers and hands each to the hasher and to the reader through bounded
//! channels, so at most a few MiB are in flight whatever the layer's size.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use sha2::{Digest, Sha256};

use crate::body::CHUNK;

/// Buffers in flight between the decoder and each consumer.
const IN_FLIGHT: usize = 4;

type Chunk = Arc<Vec<u8>>;

/// The decoded stream as the tar walk reads it.
pub(crate) struct Decoded {
    rx: Receiver<io::Result<Chunk>>,
    current: Chunk,
    at: usize,
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // the decoder finished
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Runs `consume` on the stream `source` decodes, with decoding (and, when `hash`, sha256 of the whole stream)
/// on threads of their own. Returns what `consume` returned and the stream's `sha256:…` digest, which covers
/// the whole stream only when `consume` read it to the end.
pub(crate) fn decode_in_threads<T>(
    mut source: Box<dyn Read + Send>,
    hash: bool,
    consume: impl FnOnce(&mut Decoded) -> T,
) -> (T, Option<String>) {
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<io::Result<Chunk>>(IN_FLIGHT);
        let (hash_tx, hash_rx) = sync_channel::<Chunk>(IN_FLIGHT);
        let hasher = hash.then(|| {
            s.spawn(move || {
                let mut sha = Sha256::new();
                for chunk in hash_rx {
                    sha.update(&chunk[..]);
                }
                format!("sha256:{}", hex::encode(sha.finalize()))
            })
        });
        s.spawn(move || {
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                // Fill the whole buffer: fewer, larger hand-offs and writes downstream.
                while filled < buf.len() {
                    match source.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                buf.truncate(filled);
                let chunk = Arc::new(buf);
                if hash && hash_tx.send(chunk.clone()).is_err() {
                    return;
                }
                if tx.send(Ok(chunk)).is_err() {
                    return; // the reader stopped (a refused entry)
                }
            }
        });
        let mut decoded = Decoded {
            rx,
            current: Arc::new(Vec::new()),
            at: 0,
        };
        let out = consume(&mut decoded);
        // Unblocks a decoder waiting to hand over more when `consume` stopped early.
        drop(decoded);
        let digest = hasher.and_then(|h| h.join().ok());
        (out, digest)
    })
}

/// Copies `from` into `to` through `buf`: one write per read, and reads as large as the decoded chunks, instead
/// of `io::copy`'s 8 KiB pieces.
pub(crate) fn copy_through(
    from: &mut impl Read,
    to: &mut impl io::Write,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_and_its_digest_arrive_whole() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let want = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        let source: Box<dyn Read + Send> = Box::new(io::Cursor::new(data.clone()));
        let (got, digest) = decode_in_threads(source, true, |r| {
            let mut out = Vec::new();
            copy_through(r, &mut out, &mut vec![0; 1000]).unwrap();
            out
        });
        assert_eq!(got, data);
        assert_eq!(digest.as_deref(), Some(want.as_str()));
    }

    #[test]
    fn a_reader_that_stops_early_does_not_hang_the_decoder() {
        let source: Box<dyn Read + Send> = Box::new(io::repeat(7).take(64 * CHUNK as u64));
        let (first, _) = decode_in_threads(source, true, |r| {
            let mut b = [0u8; 10];
            r.read_exact(&mut b).map(|()| b[0])
        });
        assert_eq!(first.unwrap(), 7);
    }
}

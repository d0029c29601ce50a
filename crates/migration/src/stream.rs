//! The stream format: a header, then checksummed frames.
//!
//! ```text
//! header   magic "KVMKITMS" (8 bytes) | version u32 LE | reserved u32 (0)
//! frame    tag u32 LE | length u64 LE | payload (length bytes) | crc32 u32 LE
//! ```
//!
//! The CRC32 (IEEE) covers the tag, the length and the payload, so a flipped
//! bit anywhere in a frame is caught before its payload is used. Lengths are
//! bounded by [`MAX_FRAME_PAYLOAD`], so a corrupted length never makes the
//! reader allocate gigabytes.

use crate::{Error, Result};
use std::fmt;
use std::io::{Read, Write};

/// The first eight bytes of every stream and snapshot state file.
pub const MAGIC: [u8; 8] = *b"KVMKITMS";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the stream header.
pub const HEADER_LEN: u64 = 16;
/// The largest payload a frame may carry (16 MiB).
pub const MAX_FRAME_PAYLOAD: u64 = 16 << 20;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tag {
    /// JSON: the ABI profile the state needs. Always the first frame.
    Profile,
    /// JSON: the guest RAM layout, a list of [`crate::RamRange`].
    Layout,
    /// Guest pages: `gpa u64 LE` then whole 4 KiB pages.
    Pages,
    /// Zero pages: `gpa u64 LE`, `len u64 LE`.
    ZeroPages,
    /// JSON: the VM's device and vCPU state.
    State,
    /// JSON: the end of a pre-copy round (informational).
    Round,
    /// The end of the stream.
    End,
    /// Destination → source: the state was restored (empty) or refused (the
    /// reason as UTF-8).
    Ack,
}

impl Tag {
    /// The tag's number in the stream.
    pub fn raw(self) -> u32 {
        match self {
            Tag::Profile => 1,
            Tag::Layout => 2,
            Tag::Pages => 3,
            Tag::ZeroPages => 4,
            Tag::State => 5,
            Tag::Round => 6,
            Tag::End => 7,
            Tag::Ack => 8,
        }
    }

    /// The tag of a stream number, if known.
    ///
    /// ```
    /// use kvmkit_migration::Tag;
    /// assert_eq!(Tag::from_raw(3), Some(Tag::Pages));
    /// assert_eq!(Tag::from_raw(99), None);
    /// ```
    pub fn from_raw(raw: u32) -> Option<Tag> {
        Some(match raw {
            1 => Tag::Profile,
            2 => Tag::Layout,
            3 => Tag::Pages,
            4 => Tag::ZeroPages,
            5 => Tag::State,
            6 => Tag::Round,
            7 => Tag::End,
            8 => Tag::Ack,
            _ => return None,
        })
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Tag::Profile => "PROFILE",
            Tag::Layout => "LAYOUT",
            Tag::Pages => "PAGES",
            Tag::ZeroPages => "ZERO_PAGES",
            Tag::State => "STATE",
            Tag::Round => "ROUND",
            Tag::End => "END",
            Tag::Ack => "ACK",
        };
        f.write_str(s)
    }
}

/// One frame read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub tag: Tag,
    /// Where it starts in the stream.
    pub offset: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Writes a stream: the header on creation, then frames.
///
/// ```
/// use kvmkit_migration::{FrameReader, FrameWriter, Tag};
/// let mut w = FrameWriter::new(Vec::new())?;
/// w.frame(Tag::State, b"{}")?;
/// w.frame(Tag::End, &[])?;
/// let bytes = w.into_inner();
/// let mut r = FrameReader::new(&bytes[..])?;
/// assert_eq!(r.next_frame()?.payload, b"{}");
/// assert_eq!(r.next_frame()?.tag, Tag::End);
/// # Ok::<(), kvmkit_migration::Error>(())
/// ```
#[derive(Debug)]
pub struct FrameWriter<W: Write> {
    w: W,
    offset: u64,
}

impl<W: Write> FrameWriter<W> {
    /// Writes the header to `w`.
    pub fn new(w: W) -> Result<Self> {
        let mut fw = FrameWriter { w, offset: 0 };
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        fw.put(&header)?;
        Ok(fw)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes).map_err(|source| Error::Write {
            offset: self.offset,
            source,
        })?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Writes one frame whose payload is the concatenation of `parts`
    /// (no copy into one buffer). Fails without writing when the payload is
    /// longer than [`MAX_FRAME_PAYLOAD`].
    pub fn frame_parts(&mut self, tag: Tag, parts: &[&[u8]]) -> Result<()> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len > MAX_FRAME_PAYLOAD {
            return Err(Error::BadFrame {
                offset: self.offset,
                detail: format!("{tag} payload of {len} bytes exceeds {MAX_FRAME_PAYLOAD}"),
            });
        }
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&tag.raw().to_le_bytes());
        head[4..].copy_from_slice(&len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        self.put(&head)?;
        for p in parts {
            crc.update(p);
            self.put(p)?;
        }
        self.put(&crc.finalize().to_le_bytes())
    }

    /// Writes one frame.
    pub fn frame(&mut self, tag: Tag, payload: &[u8]) -> Result<()> {
        self.frame_parts(tag, &[payload])
    }

    /// Writes a frame whose payload is `value` as JSON.
    pub fn json<T: serde::Serialize>(
        &mut self,
        tag: Tag,
        what: &'static str,
        value: &T,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Json { what, source })?;
        self.frame(tag, &bytes)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> Result<()> {
        self.w.flush().map_err(|source| Error::Write {
            offset: self.offset,
            source,
        })
    }

    /// Bytes written so far, header included.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// The underlying writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }

    /// Returns the underlying writer.
    pub fn into_inner(self) -> W {
        self.w
    }
}

/// Reads a stream: checks the header on creation, then returns frames.
#[derive(Debug)]
pub struct FrameReader<R: Read> {
    r: R,
    offset: u64,
}

impl<R: Read> FrameReader<R> {
    /// Reads and checks the header of `r`.
    ///
    /// ```
    /// use kvmkit_migration::{Error, FrameReader};
    /// assert!(matches!(FrameReader::new(&b"not a stream...."[..]), Err(Error::BadMagic { .. })));
    /// assert!(matches!(FrameReader::new(&b"KVMKIT"[..]), Err(Error::Truncated { .. })));
    /// ```
    pub fn new(r: R) -> Result<Self> {
        let mut fr = FrameReader { r, offset: 0 };
        let mut header = [0u8; 16];
        fr.fill(&mut header, "the stream header")?;
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&header[..8]);
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        Ok(fr)
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.r.read(&mut buf[done..]) {
                Ok(0) => {
                    return Err(Error::Truncated {
                        offset: self.offset + done as u64,
                        what: what.to_string(),
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Read {
                        offset: self.offset + done as u64,
                        source,
                    })
                }
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Reads the next frame, checking its tag, length and checksum.
    pub fn next_frame(&mut self) -> Result<Frame> {
        let offset = self.offset;
        let mut head = [0u8; 12];
        self.fill(&mut head, "a frame header")?;
        let raw = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&head[4..]);
        let len = u64::from_le_bytes(len8);
        let tag = Tag::from_raw(raw).ok_or_else(|| Error::BadFrame {
            offset,
            detail: format!("unknown tag {raw}"),
        })?;
        if len > MAX_FRAME_PAYLOAD {
            return Err(Error::BadFrame {
                offset,
                detail: format!("{tag} payload length {len} exceeds {MAX_FRAME_PAYLOAD}"),
            });
        }
        let mut payload = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        self.fill(&mut payload, &format!("a {tag} frame"))?;
        let mut crc4 = [0u8; 4];
        self.fill(&mut crc4, &format!("the checksum of a {tag} frame"))?;
        let found = u32::from_le_bytes(crc4);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(&payload);
        let expected = crc.finalize();
        if found != expected {
            return Err(Error::Checksum {
                tag: tag.to_string(),
                offset,
                found,
                expected,
            });
        }
        Ok(Frame {
            tag,
            offset,
            payload,
        })
    }

    /// Reads the next frame and requires it to be `tag`.
    pub fn expect(&mut self, tag: Tag, expected: &'static str) -> Result<Frame> {
        let f = self.next_frame()?;
        if f.tag != tag {
            return Err(Error::UnexpectedFrame {
                offset: f.offset,
                found: f.tag.to_string(),
                expected,
            });
        }
        Ok(f)
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// The underlying reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.r
    }
}

/// Decodes a JSON frame payload.
pub fn from_json<T: serde::de::DeserializeOwned>(frame: &Frame, what: &'static str) -> Result<T> {
    serde_json::from_slice(&frame.payload).map_err(|source| Error::Json { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(frames: &[(Tag, &[u8])]) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        for (t, p) in frames {
            w.frame(*t, p).unwrap();
        }
        w.into_inner()
    }

    #[test]
    fn round_trip_every_tag() {
        let tags = [
            Tag::Profile,
            Tag::Layout,
            Tag::Pages,
            Tag::ZeroPages,
            Tag::State,
            Tag::Round,
            Tag::End,
            Tag::Ack,
        ];
        let frames: Vec<(Tag, Vec<u8>)> = tags
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, vec![u8::try_from(i).unwrap(); i * 100]))
            .collect();
        let refs: Vec<(Tag, &[u8])> = frames.iter().map(|(t, p)| (*t, &p[..])).collect();
        let bytes = stream(&refs);
        let mut r = FrameReader::new(&bytes[..]).unwrap();
        for (t, p) in &frames {
            let f = r.next_frame().unwrap();
            assert_eq!((f.tag, &f.payload), (*t, p));
            assert_eq!(Tag::from_raw(t.raw()), Some(*t));
        }
        assert_eq!(r.bytes_read(), bytes.len() as u64);
        assert!(matches!(r.next_frame(), Err(Error::Truncated { .. })));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = stream(&[(Tag::State, b"{\"a\":1}")]);
        for i in 16..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let err = FrameReader::new(&bad[..])
                    .unwrap()
                    .next_frame()
                    .unwrap_err();
                assert!(
                    matches!(
                        err,
                        Error::Checksum { .. } | Error::BadFrame { .. } | Error::Truncated { .. }
                    ),
                    "byte {i} bit {bit}: {err}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        let bytes = stream(&[(Tag::Pages, &[7u8; 64]), (Tag::End, &[])]);
        for cut in 0..bytes.len() {
            let res = FrameReader::new(&bytes[..cut]).and_then(|mut r| {
                r.next_frame()?;
                r.next_frame()
            });
            assert!(
                matches!(res, Err(Error::Truncated { .. })),
                "cut {cut}: {res:?}"
            );
        }
    }

    #[test]
    fn bad_header_and_frame_headers() {
        let mut bytes = stream(&[]);
        bytes[8] = 2;
        let err = FrameReader::new(&bytes[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "migration stream format version 2 is not supported (this build reads version 1)"
        );
        let mut bytes = stream(&[(Tag::End, &[])]);
        bytes[16] = 42;
        let err = FrameReader::new(&bytes[..])
            .unwrap()
            .next_frame()
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid frame at byte 16: unknown tag 42");
        let mut bytes = stream(&[(Tag::End, &[])]);
        bytes[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = FrameReader::new(&bytes[..])
            .unwrap()
            .next_frame()
            .unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    #[test]
    fn oversized_payload_is_refused_before_writing() {
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        let big = vec![0u8; usize::try_from(MAX_FRAME_PAYLOAD).unwrap() + 1];
        assert!(matches!(
            w.frame(Tag::Pages, &big),
            Err(Error::BadFrame { .. })
        ));
        assert_eq!(w.bytes_written(), HEADER_LEN);
    }

    #[test]
    fn expect_names_both_tags() {
        let bytes = stream(&[(Tag::State, b"{}")]);
        let mut r = FrameReader::new(&bytes[..]).unwrap();
        let err = r.expect(Tag::Profile, "the PROFILE frame").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected STATE frame at byte 16: expected the PROFILE frame"
        );
    }

    #[test]
    fn write_errors_carry_the_offset() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
                }
                let n = b.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = FrameWriter::new(Full(20)).unwrap();
        let err = w.frame(Tag::State, b"0123456789").unwrap_err();
        assert!(matches!(err, Error::Write { offset: 16, .. }), "{err:?}");
    }
}

//! Ogg Opus files (RFC 7845) in and out: what `hark talk` sends and `hark listen` writes.
//!
//! What it is: a reader that takes an Ogg Opus file as opusenc or ffmpeg write it and hands
//! back its OpusHead (the message's codec metadata) and its audio packets, each with its
//! duration from the packet's TOC byte (RFC 6716 §3.1); and a writer that makes a playable
//! file from an OpusHead and packets, with granule positions counted at 48 kHz. What it is
//! not: a decoder or encoder; packets pass through bit for bit.

use std::fs::File;
use std::io::{BufWriter, Cursor, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ogg::{PacketReader, PacketWriteEndInfo, PacketWriter};
use thiserror::Error;

/// Largest Ogg Opus file `hark talk` reads (about 9 hours of 64 kbit/s speech).
pub const OPUS_FILE_LEN_MAX: u64 = 256 * 1024 * 1024;

/// Largest OpusHead accepted (the protocol's codec metadata limit).
pub const OPUS_HEAD_LEN_MAX: usize = hark_core::protocol::CODEC_LEN_MAX;

/// Longest Opus packet in 48 kHz samples (120 ms, RFC 6716 §3.2.5).
pub const PACKET_SAMPLES_MAX: u32 = 5760;

/// Packets a writer puts on one Ogg page at most before ending it (about a second of 20 ms
/// packets), so a file being written is readable up to a recent point.
pub const PACKETS_PER_PAGE_MAX: u32 = 50;

/// Why an Ogg Opus file could not be read or written.
#[derive(Debug, Error)]
pub enum OpusError {
    /// The file could not be opened, read or written: check the path and permissions.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is larger than [`OPUS_FILE_LEN_MAX`].
    #[error("{path}: larger than {OPUS_FILE_LEN_MAX} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not an Ogg file, or its pages are damaged (bad capture pattern, checksum).
    #[error("{path}: not an Ogg file ({detail})")]
    NotOgg {
        /// The file.
        path: PathBuf,
        /// What the Ogg reader found.
        detail: String,
    },
    /// An Ogg file that does not carry Opus (no `OpusHead` first), or a bad OpusHead.
    #[error("{path}: not Ogg Opus ({detail})")]
    NotOpus {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The file ends before its last page (no end-of-stream page): it was cut short.
    #[error("{path}: truncated (the Ogg stream has no end-of-stream page)")]
    Truncated {
        /// The file.
        path: PathBuf,
    },
    /// An audio packet whose TOC byte does not describe a valid Opus packet.
    #[error("packet {index}: not a valid Opus packet ({detail})")]
    BadPacket {
        /// The packet's position among the audio packets.
        index: u64,
        /// What is wrong.
        detail: &'static str,
    },
}

/// The fields of an OpusHead a player needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusHead {
    /// Output channels.
    pub channels: u8,
    /// Samples (at 48 kHz) to drop from the start of the decoded audio.
    pub pre_skip: u16,
    /// The sample rate of the original input (informational).
    pub input_sample_rate: u32,
}

impl OpusHead {
    /// Parses an OpusHead packet (RFC 7845 §5.1).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 19 || &bytes[..8] != b"OpusHead" {
            return Err("the first packet is not an OpusHead".into());
        }
        if bytes.len() > OPUS_HEAD_LEN_MAX {
            return Err(format!("OpusHead longer than {OPUS_HEAD_LEN_MAX} bytes"));
        }
        if bytes[8] >> 4 != 0 {
            return Err(format!("OpusHead version {} is not supported", bytes[8]));
        }
        let channels = bytes[9];
        if channels == 0 {
            return Err("OpusHead has zero channels".into());
        }
        let family = bytes[18];
        let expected = if family == 0 {
            19
        } else {
            21 + usize::from(channels)
        };
        if family == 0 && channels > 2 {
            return Err("mapping family 0 with more than 2 channels".into());
        }
        if bytes.len() < expected {
            return Err("OpusHead is shorter than its channel mapping".into());
        }
        Ok(Self {
            channels,
            pre_skip: u16::from_le_bytes([bytes[10], bytes[11]]),
            input_sample_rate: u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
        })
    }
}

/// The duration of an Opus packet in 48 kHz samples, from its TOC byte (RFC 6716 §3.1).
pub fn packet_samples(packet: &[u8]) -> Result<u32, &'static str> {
    let Some(&toc) = packet.first() else {
        return Err("empty packet");
    };
    let config = toc >> 3;
    let frame_samples: u32 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => match packet.get(1) {
            Some(count) => u32::from(count & 0x3f),
            None => return Err("code 3 packet without a frame count byte"),
        },
    };
    if frames == 0 {
        return Err("code 3 packet with zero frames");
    }
    let samples = frames * frame_samples;
    if samples > PACKET_SAMPLES_MAX {
        return Err("packet longer than 120 ms");
    }
    Ok(samples)
}

/// An Ogg Opus file read whole: its OpusHead and its audio packets with their durations.
#[derive(Debug, Clone)]
pub struct OpusFile {
    /// The OpusHead packet as it is in the file (sent as the message's codec metadata).
    pub head_bytes: Bytes,
    /// The OpusHead's fields.
    pub head: OpusHead,
    /// The audio packets in order.
    pub packets: Vec<Bytes>,
    /// Each packet's duration in 48 kHz samples.
    pub packet_samples: Vec<u32>,
}

impl OpusFile {
    /// Reads the first logical stream of the Ogg Opus file at `path`.
    pub fn read(path: &Path) -> Result<Self, OpusError> {
        let io = |source| OpusError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(OPUS_FILE_LEN_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > OPUS_FILE_LEN_MAX {
            return Err(OpusError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Self::parse(path, bytes)
    }

    /// Parses the bytes of an Ogg Opus file; `path` names it in errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, OpusError> {
        let not_ogg = |detail: String| OpusError::NotOgg {
            path: path.to_path_buf(),
            detail,
        };
        let not_opus = |detail: String| OpusError::NotOpus {
            path: path.to_path_buf(),
            detail,
        };
        let total = bytes.len();
        let mut reader = PacketReader::new(Cursor::new(bytes));
        let first = match reader.read_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => return Err(not_ogg("the file is empty".into())),
            Err(error) => return Err(not_ogg(error.to_string())),
        };
        let serial = first.stream_serial();
        let head = OpusHead::parse(&first.data).map_err(not_opus)?;
        let head_bytes = Bytes::from(first.data);
        let mut packets = Vec::new();
        let mut samples = Vec::new();
        let mut seen_tags = false;
        let mut ended = false;
        // Bounded by the file's size: every packet consumes bytes of it.
        loop {
            let packet = match reader.read_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                Err(error) => {
                    let position = reader.get_mut().position();
                    if position as usize >= total || !packets.is_empty() || seen_tags {
                        return Err(OpusError::Truncated {
                            path: path.to_path_buf(),
                        });
                    }
                    return Err(not_ogg(error.to_string()));
                }
            };
            if packet.stream_serial() != serial {
                continue;
            }
            let last = packet.last_in_stream();
            if !seen_tags {
                if !packet.data.starts_with(b"OpusTags") {
                    return Err(not_opus("the second packet is not OpusTags".into()));
                }
                seen_tags = true;
            } else {
                let index = packets.len() as u64;
                let duration = packet_samples(&packet.data)
                    .map_err(|detail| OpusError::BadPacket { index, detail })?;
                samples.push(duration);
                packets.push(Bytes::from(packet.data));
            }
            if last {
                ended = true;
                break;
            }
        }
        if !ended {
            return Err(OpusError::Truncated {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            head_bytes,
            head,
            packets,
            packet_samples: samples,
        })
    }
}

/// Writes one Ogg Opus file packet by packet; [`OpusFileWriter::finish`] ends the stream.
///
/// The last packet is held back until the next one (or the finish) arrives, so the
/// end-of-stream flag lands on the real last page even when the message is cut short.
pub struct OpusFileWriter {
    path: PathBuf,
    writer: PacketWriter<'static, BufWriter<File>>,
    serial: u32,
    granule: u64,
    on_page: u32,
    /// The OpusTags packet is the one held back (it ends its own page, RFC 7845 §3).
    tags_pending: bool,
    held: Option<(Vec<u8>, u64)>,
}

impl std::fmt::Debug for OpusFileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusFileWriter")
            .field("path", &self.path)
            .field("granule", &self.granule)
            .finish_non_exhaustive()
    }
}

impl OpusFileWriter {
    /// Creates `path` (replacing it) and writes the OpusHead page and an OpusTags page naming
    /// `vendor`.
    pub fn create(path: &Path, serial: u32, head: &[u8], vendor: &str) -> Result<Self, OpusError> {
        let io = |source| OpusError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(io)?;
        let mut writer = PacketWriter::new(BufWriter::new(file));
        writer
            .write_packet(head.to_vec(), serial, PacketWriteEndInfo::EndPage, 0)
            .map_err(io)?;
        let mut tags = Vec::with_capacity(8 + 4 + vendor.len() + 4);
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes());
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            serial,
            granule: 0,
            on_page: 0,
            tags_pending: true,
            held: Some((tags, 0)),
        })
    }

    /// Appends one audio packet; its granule position is the samples of every packet so far.
    pub fn write_packet(&mut self, packet: &[u8], index: u64) -> Result<(), OpusError> {
        let samples =
            packet_samples(packet).map_err(|detail| OpusError::BadPacket { index, detail })?;
        self.granule += u64::from(samples);
        if let Some((held, granule)) = self.held.take() {
            let end = if self.tags_pending {
                self.tags_pending = false;
                PacketWriteEndInfo::EndPage
            } else {
                self.on_page += 1;
                if self.on_page >= PACKETS_PER_PAGE_MAX {
                    self.on_page = 0;
                    PacketWriteEndInfo::EndPage
                } else {
                    PacketWriteEndInfo::NormalPacket
                }
            };
            self.writer
                .write_packet(held, self.serial, end, granule)
                .map_err(|source| OpusError::Io {
                    path: self.path.clone(),
                    source,
                })?;
        }
        self.held = Some((packet.to_vec(), self.granule));
        Ok(())
    }

    /// Writes the held-back packet as the end of the stream and flushes the file.
    pub fn finish(mut self) -> Result<(), OpusError> {
        let io = |source| OpusError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some((held, granule)) = self.held.take() {
            self.writer
                .write_packet(held, self.serial, PacketWriteEndInfo::EndStream, granule)
                .map_err(io)?;
        }
        self.writer.inner_mut().flush().map_err(io)
    }
}

#[cfg(test)]
mod tests;

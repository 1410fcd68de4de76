//! The backup file: a first line naming the file format, a line of JSON describing the backup
//! ([`BackupHeader`]), then the snapshot bytes, whose length and BLAKE3 checksum the header
//! records.
//!
//! ```text
//! parley-snapshot 1\n
//! {"cluster_id":"prod-eu","log_id":{"term":7,"leader":2,"index":52113},...}\n
//! <payload_bytes bytes of snapshot>
//! ```
//!
//! The header is readable without the payload (`parley snapshot inspect`); the payload is
//! checked against the header before anything decodes it.

use std::io::{BufRead, Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::BackupError;
use crate::types::NodeId;

/// The first line's word.
pub const MAGIC: &str = "parley-snapshot";
/// The file format this release writes and reads.
pub const FILE_FORMAT: u32 = 1;
/// Longest first line read, in bytes.
const MAGIC_LINE_BYTES_MAX: u64 = 64;
/// Longest header line read, in bytes.
pub const HEADER_BYTES_MAX: u64 = 1024 * 1024;
/// Most bytes allocated ahead of reading a payload: the header's length is not trusted until
/// the bytes are there.
const PAYLOAD_PREALLOCATE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// What a backup holds, written before its payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The cluster it was taken from.
    pub cluster_id: String,
    /// The node that took it.
    pub taken_by: NodeId,
    /// When, in milliseconds since the Unix epoch, by that node's clock.
    pub taken_at_ms: u64,
    /// The release that took it.
    pub release: String,
    /// The snapshot format of the payload.
    pub snapshot_format: u32,
    /// The last log entry the snapshot covers.
    pub log_id: BackupLogId,
    /// The members at that entry.
    pub members: Vec<BackupMember>,
    /// The state digest at that entry, as the cluster view reports it
    /// (`GET /api/v1/cluster`, `state_digest`).
    pub state_digest: String,
    /// Chats in the state (archived ones not counted).
    pub chats: u64,
    /// Activities in the state (archived ones not counted).
    pub activities: u64,
    /// Records in the archive (ended chats and finished activities past their retention).
    pub archived_records: u64,
    /// Length of the payload.
    pub payload_bytes: u64,
    /// BLAKE3 of the payload, hex.
    pub payload_blake3: String,
}

/// A log entry's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupLogId {
    /// Its term.
    pub term: u64,
    /// The leader that proposed it.
    pub leader: NodeId,
    /// Its index.
    pub index: u64,
}

/// A member of the cluster a backup was taken from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMember {
    /// Node id.
    pub id: NodeId,
    /// Whether it voted.
    pub voter: bool,
    /// Its site.
    pub site: String,
    /// Its gRPC address.
    pub grpc_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
}

/// The bytes before the payload: the first line and the header line.
pub fn prefix(header: &BackupHeader) -> Result<Vec<u8>, BackupError> {
    let mut out = format!("{MAGIC} {FILE_FORMAT}\n").into_bytes();
    serde_json::to_writer(&mut out, header).map_err(BackupError::Header)?;
    out.push(b'\n');
    Ok(out)
}

/// Writes a whole backup file.
pub fn write(
    out: &mut impl Write,
    header: &BackupHeader,
    payload: &[u8],
) -> Result<(), BackupError> {
    let io = |source| BackupError::Io {
        what: "writing the backup".to_owned(),
        source,
    };
    out.write_all(&prefix(header)?).map_err(io)?;
    out.write_all(payload).map_err(io)?;
    out.flush().map_err(io)
}

/// Reads one line of at most `max` bytes, without its newline.
fn line(input: &mut impl BufRead, max: u64, what: &str) -> Result<Vec<u8>, BackupError> {
    let mut bytes = Vec::new();
    input
        .take(max + 1)
        .read_until(b'\n', &mut bytes)
        .map_err(|source| BackupError::Io {
            what: format!("reading the {what}"),
            source,
        })?;
    if bytes.last() != Some(&b'\n') {
        return Err(BackupError::NotABackup(if bytes.len() as u64 > max {
            format!("its {what} is longer than {max} bytes")
        } else {
            format!("it ends inside its {what}")
        }));
    }
    bytes.pop();
    Ok(bytes)
}

/// Reads the first line and the header, leaving `input` at the payload's first byte.
pub fn read_header(input: &mut impl BufRead) -> Result<BackupHeader, BackupError> {
    let first = line(input, MAGIC_LINE_BYTES_MAX, "first line")?;
    let first = String::from_utf8_lossy(&first);
    let format = first
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(|| {
            BackupError::NotABackup(format!("its first line is not \"{MAGIC} <format>\""))
        })?;
    let format: u32 = format
        .parse()
        .map_err(|_| BackupError::NotABackup(format!("{format:?} is not a file format")))?;
    if format != FILE_FORMAT {
        return Err(BackupError::FileFormat { format });
    }
    let header = line(input, HEADER_BYTES_MAX, "header")?;
    serde_json::from_slice(&header).map_err(BackupError::Header)
}

/// Reads the payload after [`read_header`] and checks its length and checksum; with `keep`
/// false nothing is kept (for checking a file without holding it in memory).
fn read_checked(
    input: &mut impl Read,
    header: &BackupHeader,
    keep: bool,
) -> Result<Vec<u8>, BackupError> {
    let mut hasher = blake3::Hasher::new();
    let mut kept = Vec::new();
    if keep {
        kept.reserve(
            usize::try_from(header.payload_bytes.min(PAYLOAD_PREALLOCATE_BYTES_MAX)).unwrap_or(0),
        );
    }
    let mut buffer = vec![0u8; 1 << 16];
    let mut read = 0u64;
    loop {
        let n = input.read(&mut buffer).map_err(|source| BackupError::Io {
            what: "reading the payload".to_owned(),
            source,
        })?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > header.payload_bytes {
            return Err(BackupError::Length {
                expected: header.payload_bytes,
                found: format!("more than {}", header.payload_bytes),
            });
        }
        hasher.update(&buffer[..n]);
        if keep {
            kept.extend_from_slice(&buffer[..n]);
        }
    }
    if read != header.payload_bytes {
        return Err(BackupError::Length {
            expected: header.payload_bytes,
            found: read.to_string(),
        });
    }
    let found = hasher.finalize().to_hex().to_string();
    if found != header.payload_blake3 {
        return Err(BackupError::Checksum {
            expected: header.payload_blake3.clone(),
            found,
        });
    }
    Ok(kept)
}

/// Reads the payload after [`read_header`], checked against `header`.
pub fn read_payload(input: &mut impl Read, header: &BackupHeader) -> Result<Vec<u8>, BackupError> {
    read_checked(input, header, true)
}

/// Reads a whole backup: its header and its checked payload.
pub fn read(input: &mut impl BufRead) -> Result<(BackupHeader, Vec<u8>), BackupError> {
    let header = read_header(input)?;
    let payload = read_payload(input, &header)?;
    Ok((header, payload))
}

/// Reads a backup's header and checks its payload's length and checksum without keeping it.
pub fn verify(input: &mut impl BufRead) -> Result<BackupHeader, BackupError> {
    let header = read_header(input)?;
    read_checked(input, &header, false)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(payload: &[u8]) -> BackupHeader {
        BackupHeader {
            cluster_id: "prod".to_owned(),
            taken_by: 2,
            taken_at_ms: 1_700_000_000_000,
            release: "0.1.0".to_owned(),
            snapshot_format: 1,
            log_id: BackupLogId {
                term: 3,
                leader: 2,
                index: 40,
            },
            members: vec![BackupMember {
                id: 2,
                voter: true,
                site: "east".to_owned(),
                grpc_addr: "10.0.0.2:7100".to_owned(),
                http_addr: "10.0.0.2:8080".to_owned(),
            }],
            state_digest: "d".repeat(64),
            chats: 5,
            activities: 6,
            archived_records: 1,
            payload_bytes: payload.len() as u64,
            payload_blake3: blake3::hash(payload).to_hex().to_string(),
        }
    }

    fn file(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, &header(payload), payload).unwrap();
        out
    }

    #[test]
    fn a_file_reads_back_its_header_and_payload() {
        let payload = br#"{"machine":{}}"#;
        let bytes = file(payload);
        assert!(bytes.starts_with(b"parley-snapshot 1\n{"));
        let (read_back, got) = read(&mut bytes.as_slice()).unwrap();
        assert_eq!(read_back, header(payload));
        assert_eq!(got, payload);
        assert_eq!(verify(&mut bytes.as_slice()).unwrap(), header(payload));
    }

    #[test]
    fn damage_anywhere_is_named() {
        let payload = b"0123456789abcdef";
        let good = file(payload);

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            read(&mut flipped.as_slice()),
            Err(BackupError::Checksum { .. })
        ));

        let truncated = &good[..good.len() - 3];
        assert!(matches!(
            verify(&mut &truncated[..]),
            Err(BackupError::Length { expected: 16, .. })
        ));

        let mut longer = good.clone();
        longer.extend_from_slice(b"xx");
        assert!(matches!(
            read(&mut longer.as_slice()),
            Err(BackupError::Length { .. })
        ));

        let newer =
            String::from_utf8_lossy(&good).replacen("parley-snapshot 1", "parley-snapshot 2", 1);
        assert!(matches!(
            read(&mut newer.as_bytes()),
            Err(BackupError::FileFormat { format: 2 })
        ));

        for garbage in [
            &b"PK\x03\x04 not a backup"[..],
            b"",
            b"parley-snapshot x\n{}\n",
        ] {
            assert!(
                matches!(read(&mut &garbage[..]), Err(BackupError::NotABackup(_))),
                "{garbage:?}"
            );
        }

        let no_newline = vec![b'{'; (HEADER_BYTES_MAX + 10) as usize];
        let mut long_header = b"parley-snapshot 1\n".to_vec();
        long_header.extend_from_slice(&no_newline);
        assert!(matches!(
            read_header(&mut long_header.as_slice()),
            Err(BackupError::NotABackup(why)) if why.contains("longer than")
        ));

        let bad_json = b"parley-snapshot 1\n{\"cluster_id\":1}\n".to_vec();
        assert!(matches!(
            read_header(&mut bad_json.as_slice()),
            Err(BackupError::Header(_))
        ));
    }
}

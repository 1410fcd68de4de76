//! Snapshot files: a snapshot as a file of checksummed frames, written and read as a stream.
//!
//! A snapshot never exists as one buffer in memory: the machine is encoded straight into a
//! [`FrameWriter`], which cuts the bytes into frames of at most [`FRAME_BYTES`], and decoded
//! straight out of a [`FrameReader`], which checks each frame before handing its bytes on.
//!
//! # Layout
//!
//! ```text
//! MAGIC (8 bytes) · FILE_FORMAT (u32 LE)
//! frame*:  tag (u8) · length (u32 LE) · CRC-32 of tag, length and bytes (u32 LE) · bytes
//! ```
//!
//! Frames are grouped into sections by their tag, in this order: [`Section::State`] (the JSON
//! of the machine and its log position), then, in a snapshot sent to another node or kept as a
//! backup, [`Section::Archive`] (the JSON of every archived record), then exactly one
//! [`Section::End`] frame with no bytes. A file without its end frame was cut short and is
//! refused, as is a frame whose checksum fails, a frame longer than [`FRAME_BYTES_MAX`], a tag
//! out of order and anything after the end frame.
//!
//! # Where the files live
//!
//! [`SnapshotDir`] is a directory of its own beside the database's files. A file is written
//! under a temporary name, synced, and renamed to its final name; the directory is synced
//! after the rename. Which file is the node's snapshot is recorded in the database (see
//! [`crate::state_machine`]); a file the database does not name is left over from a crash and
//! removed when the directory is opened. Files read by a transfer in progress stay readable
//! after they are removed (the transfer holds them open).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::db::IoMode;
use crate::error::StoreError;

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"PRLYSNAP";
/// The layout of the frames described in the module docs; stored after [`MAGIC`].
pub const FILE_FORMAT: u32 = 1;
/// Bytes of the header: [`MAGIC`] and [`FILE_FORMAT`].
const HEADER_BYTES: u64 = 12;
/// Bytes of a frame's header: tag, length, checksum.
const FRAME_HEADER_BYTES: usize = 9;
/// Bytes a [`FrameWriter`] puts in one frame (1 MiB).
pub const FRAME_BYTES: usize = 1024 * 1024;
/// Longest frame a [`FrameReader`] accepts, in bytes (16 MiB): a damaged length field is
/// refused instead of allocated.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Buffer of the reads under a [`FrameReader`], in bytes.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// File name suffix of a snapshot file.
const SUFFIX: &str = ".snapshot";
/// File name prefix of a snapshot file still being written.
const TEMP_PREFIX: &str = ".tmp-";

/// The sections of a snapshot file, by their frames' tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Section {
    /// The machine, its log position and membership (JSON).
    State = 1,
    /// Every archived record (JSON), in a snapshot sent to another node or kept as a backup.
    Archive = 2,
    /// The end of the file: one frame, no bytes.
    End = 0xff,
}

impl Section {
    fn from_tag(tag: u8) -> Option<Section> {
        match tag {
            1 => Some(Section::State),
            2 => Some(Section::Archive),
            0xff => Some(Section::End),
            _ => None,
        }
    }
}

/// The checksum of a frame: CRC-32 over its tag, length and bytes.
fn frame_crc(tag: u8, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[tag]);
    // A frame's length always fits: frames are at most FRAME_BYTES_MAX long.
    hasher.update(&(bytes.len() as u32).to_le_bytes());
    hasher.update(bytes);
    hasher.finalize()
}

/// An `InvalidData` I/O error: what a damaged file reads as.
fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Writes the frames of a snapshot file: the header at once, then the bytes written to it as
/// frames of the current section, then the end frame at [`FrameWriter::finish`].
pub struct FrameWriter<W: Write> {
    out: W,
    section: Section,
    buf: Vec<u8>,
    written: u64,
}

impl<W: Write> FrameWriter<W> {
    /// Starts a snapshot file on `out`, in the [`Section::State`] section.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&FILE_FORMAT.to_le_bytes())?;
        Ok(FrameWriter {
            out,
            section: Section::State,
            buf: Vec::with_capacity(FRAME_BYTES),
            written: HEADER_BYTES,
        })
    }

    /// Writes what is buffered as one frame, if anything is.
    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() && self.section != Section::End {
            return Ok(());
        }
        let tag = self.section as u8;
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[0] = tag;
        header[1..5].copy_from_slice(&(self.buf.len() as u32).to_le_bytes());
        header[5..9].copy_from_slice(&frame_crc(tag, &self.buf).to_le_bytes());
        self.out.write_all(&header)?;
        self.out.write_all(&self.buf)?;
        self.written += (FRAME_HEADER_BYTES + self.buf.len()) as u64;
        self.buf.clear();
        Ok(())
    }

    /// Ends the current section and starts `next`, which must come after it.
    pub fn start(&mut self, next: Section) -> io::Result<()> {
        if next <= self.section || next == Section::End {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("snapshot section {next:?} after {:?}", self.section),
            ));
        }
        self.emit()?;
        self.section = next;
        Ok(())
    }

    /// Copies the rest of `reader`'s current section into this file's current section, each
    /// frame checked on the way.
    pub fn copy_section<R: Read>(&mut self, reader: &mut FrameReader<R>) -> io::Result<u64> {
        io::copy(&mut reader.section_reader()?, self)
    }

    /// Writes the end frame and flushes; returns the writer and the file's length in bytes.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.emit()?;
        self.section = Section::End;
        self.emit()?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = FRAME_BYTES - self.buf.len();
        let taken = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..taken]);
        if self.buf.len() == FRAME_BYTES {
            self.emit()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Frames are cut by size only; the underlying writer is flushed by `finish`.
        Ok(())
    }
}

/// Reads the frames of a snapshot file, checking each: one section at a time through
/// [`FrameReader::section_reader`], then [`FrameReader::finish`] to see the end frame.
pub struct FrameReader<R: Read> {
    input: R,
    /// The section of the frame last read, or of the next frame once peeked.
    section: Section,
    /// The bytes of the frame being read, and how many of them were handed out.
    frame: Vec<u8>,
    pos: usize,
    /// A frame header read but not yet consumed (it starts another section).
    peeked: Option<(Section, usize, u32)>,
    /// Bytes of the file read so far.
    offset: u64,
}

impl<R: Read> FrameReader<R> {
    /// Reads and checks the header of a snapshot file on `input`.
    pub fn new(mut input: R) -> io::Result<Self> {
        let mut header = [0u8; HEADER_BYTES as usize];
        input.read_exact(&mut header).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => invalid("not a snapshot file: too short".to_owned()),
            _ => e,
        })?;
        if &header[..8] != MAGIC {
            return Err(invalid("not a snapshot file: wrong magic bytes".to_owned()));
        }
        let mut format = [0u8; 4];
        format.copy_from_slice(&header[8..]);
        let format = u32::from_le_bytes(format);
        if format != FILE_FORMAT {
            return Err(invalid(format!(
                "snapshot file format {format}, this release reads {FILE_FORMAT}"
            )));
        }
        Ok(FrameReader {
            input,
            section: Section::State,
            frame: Vec::new(),
            pos: 0,
            peeked: None,
            offset: HEADER_BYTES,
        })
    }

    /// Reads the next frame's header (or returns the one peeked).
    fn next_header(&mut self) -> io::Result<(Section, usize, u32)> {
        if let Some(header) = self.peeked.take() {
            return Ok(header);
        }
        let mut raw = [0u8; FRAME_HEADER_BYTES];
        self.input
            .read_exact(&mut raw)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => invalid(format!(
                    "snapshot file cut short at byte {}: no end frame",
                    self.offset
                )),
                _ => e,
            })?;
        let section = Section::from_tag(raw[0]).ok_or_else(|| {
            invalid(format!(
                "snapshot frame at byte {} has unknown tag {}",
                self.offset, raw[0]
            ))
        })?;
        let mut word = [0u8; 4];
        word.copy_from_slice(&raw[1..5]);
        let len = u32::from_le_bytes(word) as usize;
        word.copy_from_slice(&raw[5..9]);
        let crc = u32::from_le_bytes(word);
        if len > FRAME_BYTES_MAX {
            return Err(invalid(format!(
                "snapshot frame at byte {} claims {len} bytes, more than {FRAME_BYTES_MAX}",
                self.offset
            )));
        }
        if section < self.section {
            return Err(invalid(format!(
                "snapshot frame at byte {} is of section {section:?} after {:?}",
                self.offset, self.section
            )));
        }
        Ok((section, len, crc))
    }

    /// Reads the bytes of a frame whose header was just read and checks them.
    fn read_frame(&mut self, section: Section, len: usize, crc: u32) -> io::Result<()> {
        self.frame.resize(len, 0);
        self.input
            .read_exact(&mut self.frame)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => invalid(format!(
                    "snapshot file cut short inside the frame at byte {}",
                    self.offset
                )),
                _ => e,
            })?;
        if frame_crc(section as u8, &self.frame) != crc {
            return Err(invalid(format!(
                "snapshot frame at byte {} fails its checksum",
                self.offset
            )));
        }
        self.offset += (FRAME_HEADER_BYTES + len) as u64;
        self.section = section;
        self.pos = 0;
        Ok(())
    }

    /// The section the next bytes belong to, without consuming them.
    pub fn next_section(&mut self) -> io::Result<Section> {
        if self.pos < self.frame.len() {
            return Ok(self.section);
        }
        let header = self.next_header()?;
        self.peeked = Some(header);
        Ok(header.0)
    }

    /// A reader of the bytes of the section the next bytes belong to, up to the next section.
    pub fn section_reader(&mut self) -> io::Result<SectionReader<'_, R>> {
        let section = self.next_section()?;
        Ok(SectionReader {
            frames: self,
            section,
        })
    }

    /// Skips the rest of the current section, checking its frames.
    pub fn skip_section(&mut self) -> io::Result<u64> {
        io::copy(&mut self.section_reader()?, &mut io::sink())
    }

    /// Checks that the next frame is the end frame and nothing follows it.
    pub fn finish(mut self) -> io::Result<()> {
        let (section, len, crc) = self.next_header()?;
        if section != Section::End || len != 0 {
            return Err(invalid(format!(
                "snapshot frame at byte {} is of section {section:?}, expected the end",
                self.offset
            )));
        }
        self.read_frame(section, len, crc)?;
        let mut extra = [0u8; 1];
        match self.input.read(&mut extra)? {
            0 => Ok(()),
            _ => Err(invalid(format!(
                "snapshot file goes on after its end frame at byte {}",
                self.offset
            ))),
        }
    }
}

/// The bytes of one section of a [`FrameReader`]: ends (reads 0) where a frame of another
/// section starts.
pub struct SectionReader<'a, R: Read> {
    frames: &'a mut FrameReader<R>,
    section: Section,
}

impl<R: Read> Read for SectionReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let frames = &mut *self.frames;
        loop {
            // Bytes left in the current frame are of this section: `section_reader` saw to it.
            if frames.pos < frames.frame.len() {
                let n = out.len().min(frames.frame.len() - frames.pos);
                out[..n].copy_from_slice(&frames.frame[frames.pos..frames.pos + n]);
                frames.pos += n;
                return Ok(n);
            }
            let header = match frames.peeked.take() {
                Some(header) => header,
                None => frames.next_header()?,
            };
            if header.0 != self.section || header.0 == Section::End {
                frames.peeked = Some(header);
                return Ok(0);
            }
            let (section, len, crc) = header;
            frames.read_frame(section, len, crc)?;
        }
    }
}

/// Positional reads of a shared file: every reader keeps its own offset, so one open file
/// serves several reads one after another (or at once).
struct FileAt {
    file: Arc<File>,
    offset: u64,
}

impl Read for FileAt {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(out, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// A snapshot file, open for reading: what openraft hands around as a snapshot's data.
///
/// Holding it keeps the file readable even after it was replaced and removed.
#[derive(Clone)]
pub struct SnapshotFile {
    file: Arc<File>,
    bytes: u64,
    /// Where [`SnapshotFile::read_chunk`] reads: the mode of the store the file belongs to.
    io_mode: IoMode,
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFile")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl SnapshotFile {
    /// Wraps an open file of `bytes` bytes, read as `io_mode` says.
    fn new(file: File, bytes: u64, io_mode: IoMode) -> Self {
        SnapshotFile {
            file: Arc::new(file),
            bytes,
            io_mode,
        }
    }

    /// The file's length in bytes.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether the file is empty (no snapshot file ever is: it has a header and an end frame).
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// A reader of the file's raw bytes from the start.
    pub fn raw_reader(&self) -> impl Read + Send + 'static {
        FileAt {
            file: Arc::clone(&self.file),
            offset: 0,
        }
        .take(self.bytes)
    }

    /// The file's raw bytes in `[offset, offset + len)`, fewer at its end.
    pub fn read_range(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let len = len.min(self.bytes.saturating_sub(offset) as usize);
        let mut out = vec![0u8; len];
        self.file.read_exact_at(&mut out, offset)?;
        Ok(out)
    }

    /// The whole file's bytes.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        self.read_range(0, self.bytes as usize)
    }

    /// [`SnapshotFile::read_range`] off the async workers (inline under the simulator).
    pub async fn read_chunk(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = self.clone();
        run(self.io_mode, move || file.read_range(offset, len)).await?
    }

    /// A [`FrameReader`] over the file from its start, its header checked.
    pub fn frames(&self) -> io::Result<FrameReader<impl Read + Send + 'static>> {
        FrameReader::new(BufReader::with_capacity(
            READ_BUFFER_BYTES,
            FileAt {
                file: Arc::clone(&self.file),
                offset: 0,
            },
        ))
    }
}

/// Runs `f`, a blocking call on a snapshot file, as `io_mode` says: on a blocking thread in
/// production, inline under the deterministic simulator.
async fn run<T: Send + 'static>(
    io_mode: IoMode,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    match io_mode {
        IoMode::Inline => Ok(f()),
        IoMode::Blocking => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| io::Error::other(format!("the snapshot file task stopped: {e}"))),
    }
}

/// The directory a node keeps its snapshot files in.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    path: PathBuf,
    /// Where blocking calls on its files run ([`SnapshotDir::run`]): the database's mode.
    io_mode: IoMode,
}

/// A snapshot file being written under a temporary name in a [`SnapshotDir`]; removed if
/// dropped before [`PendingFile::keep`].
pub struct PendingFile {
    temp: tempfile::NamedTempFile,
    io_mode: IoMode,
}

impl PendingFile {
    /// A [`FrameWriter`] on the file, buffered.
    pub fn writer(&mut self) -> io::Result<FrameWriter<BufWriter<&mut File>>> {
        FrameWriter::new(BufWriter::with_capacity(
            FRAME_BYTES + FRAME_HEADER_BYTES,
            self.temp.as_file_mut(),
        ))
    }

    /// Syncs the file's bytes to disk.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.temp
            .as_file()
            .sync_all()
            .map_err(|source| StoreError::Io {
                op: "sync snapshot file",
                path: self.temp.path().to_path_buf(),
                source,
            })
    }

    /// Renames the file (synced by [`PendingFile::sync`]) to `name` in `dir`, then syncs the
    /// directory: from then on the file survives a crash under its final name.
    pub fn keep(
        self,
        dir: &SnapshotDir,
        name: &str,
        bytes: u64,
    ) -> Result<SnapshotFile, StoreError> {
        let path = dir.path.join(name);
        let file = self.temp.persist(&path).map_err(|e| StoreError::Io {
            op: "rename snapshot file",
            path: path.clone(),
            source: e.error,
        })?;
        dir.sync().map_err(|source| StoreError::Io {
            op: "sync snapshot directory",
            path: dir.path.clone(),
            source,
        })?;
        Ok(SnapshotFile::new(file, bytes, dir.io_mode))
    }

    /// The file as it is, without a name: it goes when its last handle is dropped.
    pub fn unnamed(self, bytes: u64) -> SnapshotFile {
        SnapshotFile::new(self.temp.into_file(), bytes, self.io_mode)
    }
}

impl SnapshotDir {
    /// Opens (creating it if missing) the snapshot directory `path`, whose files are read and
    /// written as `io_mode` says.
    pub fn open(path: PathBuf, io_mode: IoMode) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&path).map_err(|source| StoreError::Io {
            op: "create snapshot directory",
            path: path.clone(),
            source,
        })?;
        Ok(SnapshotDir { path, io_mode })
    }

    /// Runs `f`, a blocking call on this directory's files, off the async workers (inline
    /// under the simulator).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        run(self.io_mode, f).await
    }

    /// Wraps `file`, of `bytes` bytes, unnamed in this directory (e.g. from
    /// [`SnapshotDir::unnamed`], a snapshot received into it). What it holds is checked when
    /// it is read.
    pub fn adopt(&self, file: File, bytes: u64) -> SnapshotFile {
        SnapshotFile::new(file, bytes, self.io_mode)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name of a snapshot file covering the log up to `index`, unique in the directory.
    pub fn file_name(index: u64, unique: u64) -> String {
        format!("{index:020}-{unique:016x}{SUFFIX}")
    }

    /// Starts writing a snapshot file under a temporary name.
    pub fn create(&self) -> Result<PendingFile, StoreError> {
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.path)
            .map_err(|source| StoreError::Io {
                op: "create snapshot file",
                path: self.path.clone(),
                source,
            })?;
        Ok(PendingFile {
            temp,
            io_mode: self.io_mode,
        })
    }

    /// A file without a name in the directory, for a snapshot being received: it goes when
    /// its last handle is dropped.
    pub fn unnamed(&self) -> io::Result<File> {
        tempfile::tempfile_in(&self.path)
    }

    /// Opens the snapshot file `name` for reading.
    pub fn open_file(&self, name: &str) -> Result<SnapshotFile, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::corrupt(format!(
                "snapshot file name {name:?} is not one this store writes"
            )));
        }
        let path = self.path.join(name);
        let file = File::open(&path).map_err(|source| StoreError::Io {
            op: "open snapshot file",
            path: path.clone(),
            source,
        })?;
        let bytes = file
            .metadata()
            .map_err(|source| StoreError::Io {
                op: "measure snapshot file",
                path,
                source,
            })?
            .len();
        Ok(SnapshotFile::new(file, bytes, self.io_mode))
    }

    /// Removes every snapshot file this store wrote but `keep`; with `temporaries`, also the
    /// files left half-written (by a crash: only at open, when no snapshot is in progress).
    /// Returns how many were removed.
    pub fn remove_others(
        &self,
        keep: Option<&str>,
        temporaries: bool,
    ) -> Result<usize, StoreError> {
        let io_err = |op: &'static str, path: PathBuf| {
            move |source: io::Error| StoreError::Io { op, path, source }
        };
        let list_err = || io_err("list snapshot directory", self.path.clone());
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.path).map_err(list_err())? {
            let entry = entry.map_err(list_err())?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = valid_name(name) || (temporaries && name.starts_with(TEMP_PREFIX));
            if ours && Some(name) != keep {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_err("remove snapshot file", path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Syncs the directory itself, so a rename in it is durable.
    fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

/// Whether `name` is a snapshot file name [`SnapshotDir::file_name`] makes: digits, a dash,
/// hex digits and the suffix, nothing that could leave the directory.
fn valid_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(SUFFIX) else {
        return false;
    };
    let Some((index, unique)) = stem.split_once('-') else {
        return false;
    };
    index.len() == 20
        && index.bytes().all(|b| b.is_ascii_digit())
        && unique.len() == 16
        && unique.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests;

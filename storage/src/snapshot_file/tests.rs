use std::io::{Read, Write};

use super::*;

/// Bytes that differ from frame to frame (so a frame copied to the wrong place shows).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A whole snapshot file in memory: `state` in its state section, `archive` in its archive
/// section if given.
fn file_bytes(state: &[u8], archive: Option<&[u8]>) -> Vec<u8> {
    let mut out = FrameWriter::new(Vec::new()).unwrap();
    out.write_all(state).unwrap();
    if let Some(archive) = archive {
        out.start(Section::Archive).unwrap();
        out.write_all(archive).unwrap();
    }
    let (bytes, len) = out.finish().unwrap();
    assert_eq!(
        len,
        bytes.len() as u64,
        "the length finish reports is the file's"
    );
    bytes
}

/// Reads a whole file: its state section, its archive section if any, and checks the end.
fn read_back(bytes: &[u8]) -> io::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let mut frames = FrameReader::new(bytes)?;
    let mut state = Vec::new();
    frames.section_reader()?.read_to_end(&mut state)?;
    let archive = match frames.next_section()? {
        Section::Archive => {
            let mut archive = Vec::new();
            frames.section_reader()?.read_to_end(&mut archive)?;
            Some(archive)
        }
        _ => None,
    };
    frames.finish()?;
    Ok((state, archive))
}

fn invalid_data(result: io::Result<impl std::fmt::Debug>, says: &str) {
    let error = result.expect_err("a damaged file must be refused");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    assert!(
        error.to_string().contains(says),
        "{error} should say {says:?}"
    );
}

#[test]
fn sections_round_trip_across_many_frames() {
    let state = pattern(2 * FRAME_BYTES + 12_345, 1);
    let archive = pattern(FRAME_BYTES + 7, 2);
    let bytes = file_bytes(&state, Some(&archive));
    // Header, 3 state frames, 2 archive frames, the end frame.
    let frames = 3 + 2 + 1;
    assert_eq!(
        bytes.len(),
        HEADER_BYTES as usize + frames * FRAME_HEADER_BYTES + state.len() + archive.len()
    );
    let (state_back, archive_back) = read_back(&bytes).unwrap();
    assert_eq!(state_back, state);
    assert_eq!(archive_back, Some(archive));

    let (state_back, archive_back) = read_back(&file_bytes(&state, None)).unwrap();
    assert_eq!(state_back, state);
    assert_eq!(archive_back, None);
}

#[test]
fn an_empty_state_is_a_header_and_an_end_frame() {
    let bytes = file_bytes(&[], None);
    assert_eq!(bytes.len(), HEADER_BYTES as usize + FRAME_HEADER_BYTES);
    assert_eq!(read_back(&bytes).unwrap(), (Vec::new(), None));
}

#[test]
fn every_flipped_byte_is_caught() {
    let bytes = file_bytes(&pattern(3000, 3), Some(&pattern(500, 4)));
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x40;
        let result = read_back(&damaged);
        assert!(result.is_err(), "a flipped byte at {at} was not noticed");
    }
}

#[test]
fn a_file_cut_short_is_refused_wherever_it_ends() {
    let bytes = file_bytes(&pattern(3000, 5), Some(&pattern(100, 6)));
    for len in 0..bytes.len() {
        invalid_data(read_back(&bytes[..len]), "");
    }
    invalid_data(
        read_back(&bytes[..bytes.len() - FRAME_HEADER_BYTES]),
        "no end frame",
    );
}

#[test]
fn bytes_after_the_end_frame_are_refused() {
    let mut bytes = file_bytes(&pattern(10, 7), None);
    bytes.push(0);
    invalid_data(read_back(&bytes), "after its end frame");
}

#[test]
fn the_header_is_checked() {
    let bytes = file_bytes(&pattern(10, 8), None);
    let mut wrong_magic = bytes.clone();
    wrong_magic[0] = b'X';
    invalid_data(read_back(&wrong_magic), "magic");
    let mut newer = bytes.clone();
    newer[8..12].copy_from_slice(&(FILE_FORMAT + 1).to_le_bytes());
    invalid_data(read_back(&newer), "format 2");
    invalid_data(read_back(b"{\"format\":1}"), "not a snapshot file");
}

/// A file made of the header and the given raw frames (tag, bytes), each with a correct
/// checksum.
fn raw_file(frames: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FILE_FORMAT.to_le_bytes());
    for (tag, bytes) in frames {
        out.push(*tag);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame_crc(*tag, bytes).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

#[test]
fn a_huge_length_is_refused_before_anything_is_allocated() {
    let mut bytes = raw_file(&[(1, b"ab")]);
    let len_at = HEADER_BYTES as usize + 1;
    bytes[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    invalid_data(read_back(&bytes), "claims");
}

#[test]
fn sections_out_of_order_or_unknown_are_refused() {
    invalid_data(
        read_back(&raw_file(&[(2, b"[]"), (1, b"{}"), (0xff, b"")])),
        "section State after Archive",
    );
    invalid_data(
        read_back(&raw_file(&[(1, b"{}"), (7, b"?"), (0xff, b"")])),
        "unknown tag 7",
    );
    invalid_data(
        read_back(&raw_file(&[(1, b"{}"), (0xff, b"x")])),
        "expected the end",
    );
    // Well-formed by hand: the same as the writer's.
    assert_eq!(
        read_back(&raw_file(&[(1, b"{}"), (0xff, b"")])).unwrap(),
        (b"{}".to_vec(), None)
    );

    let mut out = FrameWriter::new(Vec::new()).unwrap();
    out.start(Section::Archive).unwrap();
    let error = out.start(Section::State).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(out.start(Section::End).is_err());
}

#[test]
fn a_section_can_be_copied_into_another_file() {
    let state = pattern(FRAME_BYTES + 99, 9);
    let bytes = file_bytes(&state, Some(b"[1,2,3]"));
    let mut frames = FrameReader::new(&bytes[..]).unwrap();
    let mut out = FrameWriter::new(Vec::new()).unwrap();
    assert_eq!(
        out.copy_section(&mut frames).unwrap(),
        state.len() as u64,
        "the copy stops at the archive section"
    );
    assert_eq!(frames.next_section().unwrap(), Section::Archive);
    let (copy, _) = out.finish().unwrap();
    assert_eq!(read_back(&copy).unwrap(), (state, None));
}

#[test]
fn files_are_kept_under_their_name_and_left_overs_removed() {
    let root = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(root.path().join("snapshots"), IoMode::Inline).unwrap();
    let state = pattern(70_000, 10);

    let mut pending = dir.create().unwrap();
    let (_, bytes) = {
        let mut out = pending.writer().unwrap();
        out.write_all(&state).unwrap();
        out.finish().unwrap()
    };
    pending.sync().unwrap();
    let name = SnapshotDir::file_name(42, 7);
    assert_eq!(name, "00000000000000000042-0000000000000007.snapshot");
    let kept = pending.keep(&dir, &name, bytes).unwrap();
    assert_eq!(kept.len(), bytes);

    let opened = dir.open_file(&name).unwrap();
    assert_eq!(opened.len(), bytes);
    assert_eq!(read_back(&opened.read_all().unwrap()).unwrap().0, state);
    let mut raw = Vec::new();
    opened.raw_reader().read_to_end(&mut raw).unwrap();
    assert_eq!(raw, opened.read_all().unwrap());
    assert_eq!(opened.read_range(bytes - 3, 100).unwrap().len(), 3);

    // An older snapshot file, one being written, and a file of someone else's.
    let older = SnapshotDir::file_name(41, 1);
    std::fs::write(dir.path().join(&older), b"old").unwrap();
    let in_progress = dir.create().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();

    assert_eq!(dir.remove_others(Some(&name), false).unwrap(), 1);
    assert!(!dir.path().join(&older).exists());
    assert!(
        in_progress.temp.path().exists(),
        "a file being written stays"
    );
    assert_eq!(dir.remove_others(Some(&name), true).unwrap(), 1);
    assert!(dir.path().join(&name).exists());
    assert!(
        dir.path().join("notes.txt").exists(),
        "only the store's files go"
    );

    // The open handle still reads after its file is gone.
    assert_eq!(dir.remove_others(None, true).unwrap(), 1);
    assert_eq!(read_back(&opened.read_all().unwrap()).unwrap().0, state);
}

#[test]
fn only_names_the_store_makes_are_opened() {
    let root = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(root.path().to_path_buf(), IoMode::Inline).unwrap();
    for name in [
        "../../etc/passwd",
        "00000000000000000042-0000000000000007.snapshot/../x",
        "42-7.snapshot",
        "00000000000000000042-000000000000000g.snapshot",
        "",
    ] {
        let error = dir.open_file(name).unwrap_err();
        assert!(
            matches!(error, StoreError::Corrupt { .. }),
            "{name:?}: {error}"
        );
    }
    let missing = dir.open_file(&SnapshotDir::file_name(1, 1)).unwrap_err();
    assert!(matches!(missing, StoreError::Io { .. }), "{missing}");
}

#[test]
fn bytes_from_a_peer_become_a_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(root.path().to_path_buf(), IoMode::Inline).unwrap();
    let bytes = file_bytes(&pattern(5000, 11), Some(b"[]"));
    let mut spool = dir.unnamed().unwrap();
    spool.write_all(&bytes).unwrap();
    let file = dir.adopt(spool, bytes.len() as u64);
    assert_eq!(file.len(), bytes.len() as u64);
    assert_eq!(file.read_all().unwrap(), bytes);
    let mut frames = file.frames().unwrap();
    let mut state = Vec::new();
    frames
        .section_reader()
        .unwrap()
        .read_to_end(&mut state)
        .unwrap();
    assert_eq!(state, pattern(5000, 11));
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "the file has no name"
    );
}

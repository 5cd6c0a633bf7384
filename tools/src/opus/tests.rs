//! The Ogg Opus reader and writer on the committed opusenc fixture and on synthetic files.

use super::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tone-1s.opus");

#[test]
fn the_opusenc_fixture_reads_as_one_second_of_packets() {
    let file = OpusFile::read(Path::new(FIXTURE)).unwrap();
    assert_eq!(file.head.channels, 1);
    assert_eq!(file.head.input_sample_rate, 48_000);
    assert!(!file.packets.is_empty());
    let samples: u32 = file.packet_samples.iter().sum();
    // One second of audio plus the encoder's pre-skip, in whole 20 ms packets.
    assert!(
        samples >= 48_000 + u32::from(file.head.pre_skip),
        "{samples} samples"
    );
    assert!(samples < 48_000 + u32::from(file.head.pre_skip) + 2 * 960);
}

#[test]
fn packet_durations_follow_the_toc_byte() {
    // SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms, one frame each.
    let cases = [
        (0u8, 480),
        (1, 960),
        (2, 1920),
        (3, 2880),
        (12, 480),
        (13, 960),
        (16, 120),
        (17, 240),
        (18, 480),
        (31, 960),
    ];
    for (config, samples) in cases {
        assert_eq!(
            packet_samples(&[config << 3]),
            Ok(samples),
            "config {config}"
        );
    }
    assert_eq!(
        packet_samples(&[(31 << 3) | 1]),
        Ok(1920),
        "code 1: two frames"
    );
    assert_eq!(
        packet_samples(&[(31 << 3) | 2, 0]),
        Ok(1920),
        "code 2: two frames"
    );
    assert_eq!(
        packet_samples(&[(31 << 3) | 3, 6]),
        Ok(5760),
        "code 3: six frames"
    );
    assert!(packet_samples(&[(31 << 3) | 3, 7]).is_err(), "above 120 ms");
    assert!(packet_samples(&[(31 << 3) | 3, 0]).is_err(), "zero frames");
    assert!(packet_samples(&[(31 << 3) | 3]).is_err(), "no count byte");
    assert!(packet_samples(&[]).is_err());
}

fn head() -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 1, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0]);
    head
}

/// CELT 20 ms packets of a few bytes each.
fn packets(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|n| vec![0xf8, 0xff, 0xfe, n as u8])
        .collect()
}

#[test]
fn a_written_file_reads_back_packet_for_packet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.opus");
    let sent = packets(3 * PACKETS_PER_PAGE_MAX as usize + 7);
    let mut writer = OpusFileWriter::create(&path, 7, &head(), "hark test").unwrap();
    for (index, packet) in sent.iter().enumerate() {
        writer.write_packet(packet, index as u64).unwrap();
    }
    writer.finish().unwrap();
    let file = OpusFile::read(&path).unwrap();
    assert_eq!(&file.head_bytes[..], &head()[..]);
    assert_eq!(file.packets.len(), sent.len());
    for (got, want) in file.packets.iter().zip(&sent) {
        assert_eq!(&got[..], &want[..]);
    }
}

#[test]
fn a_file_without_audio_still_ends_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.opus");
    OpusFileWriter::create(&path, 1, &head(), "hark")
        .unwrap()
        .finish()
        .unwrap();
    assert!(OpusFile::read(&path).unwrap().packets.is_empty());
}

#[test]
fn a_truncated_file_is_named_truncated() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 200] {
        let error = OpusFile::parse(Path::new("cut.opus"), bytes[..cut].to_vec()).unwrap_err();
        assert!(
            matches!(error, OpusError::Truncated { .. }),
            "cut at {cut}: {error}"
        );
    }
}

#[test]
fn a_file_that_is_not_ogg_opus_says_so() {
    let error = OpusFile::parse(Path::new("x.wav"), b"RIFF....WAVEfmt ".repeat(8)).unwrap_err();
    assert!(matches!(error, OpusError::NotOgg { .. }), "{error}");
    let error = OpusFile::parse(Path::new("e"), Vec::new()).unwrap_err();
    assert!(matches!(error, OpusError::NotOgg { .. }), "{error}");
    // An Ogg stream whose first packet is not an OpusHead (a Vorbis-like header).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vorbis.ogg");
    let mut writer = OpusFileWriter::create(&path, 1, b"\x01vorbis-not-opus-head", "x").unwrap();
    writer.write_packet(&[0xf8], 0).unwrap();
    writer.finish().unwrap();
    let error = OpusFile::read(&path).unwrap_err();
    assert!(matches!(error, OpusError::NotOpus { .. }), "{error}");
}

#[test]
fn opus_head_parsing_checks_its_fields() {
    assert!(OpusHead::parse(&head()).is_ok());
    assert!(OpusHead::parse(&head()[..18]).is_err());
    let mut zero_channels = head();
    zero_channels[9] = 0;
    assert!(OpusHead::parse(&zero_channels).is_err());
    let mut family_one = head();
    family_one[18] = 1;
    assert!(
        OpusHead::parse(&family_one).is_err(),
        "mapping table missing"
    );
    let mut long = head();
    long.resize(OPUS_HEAD_LEN_MAX + 1, 0);
    assert!(OpusHead::parse(&long).is_err());
}

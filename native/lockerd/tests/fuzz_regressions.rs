//! Replays the inputs kept under `fuzz/regressions/{term,frame}/` (crashes
//! the fuzz targets found, fixed since) and some hostile shapes through
//! the same checks as the `term` and `frame` fuzz targets (see
//! `fuzz/README.md`): decoding never panics, what decodes is canonical and
//! re-encodes to itself, what parses as a frame parses the same after
//! re-encoding.

use std::path::PathBuf;

use erl_node::codec;
use erl_node::frame;
use erl_node::term::Term;
use lockerd::stored::StoreCodec;

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .filter(|(name, _)| !name.ends_with(".md"))
        .collect();
    out.sort();
    out
}

fn check_term(bytes: &[u8]) {
    let whole = codec::decode(bytes);
    if let Ok((t, used)) = codec::decode_prefix(bytes) {
        round_trip(&t);
        if let Ok(w) = &whole {
            assert_eq!(w, &t);
            assert_eq!(used, bytes.len());
        }
        if let Ok(b) = codec::decode(&bytes[used..]) {
            round_trip(&b);
            assert_eq!(t == b, codec::to_bytes(&t) == codec::to_bytes(&b));
            let c = StoreCodec::new();
            assert_eq!(t == b, c.encode(&t) == c.encode(&b));
        }
    } else {
        assert!(whole.is_err());
    }
}

fn round_trip(t: &Term) {
    let bytes = codec::to_bytes(t);
    let back = codec::decode(&bytes).expect("re-encoded term decodes");
    assert_eq!(&back, t);
    assert_eq!(codec::to_bytes(&back), bytes);
    let c = StoreCodec::new();
    let stored = c.encode(t);
    assert_eq!(&c.decode(&stored), t);
    assert_eq!(c.encode_lookup(t), stored);
    let _ = t.display(200);
}

fn check_frame(body: &[u8]) {
    if let Ok(ctrl) = frame::parse(body) {
        let (c, used) = codec::decode_prefix(&body[1..]).expect("control decodes");
        let rest = &body[1 + used..];
        let payload = if rest.is_empty() {
            None
        } else {
            codec::decode(rest).ok()
        };
        if rest.is_empty() || payload.is_some() {
            let rebuilt = frame::build(&c, payload.as_ref());
            assert_eq!(frame::parse(&rebuilt[4..]), Ok(ctrl));
        }
    }
}

#[test]
fn term_regressions_replay() {
    for (name, bytes) in regressions("term") {
        eprintln!("term regression {name}");
        check_term(&bytes);
    }
}

#[test]
fn frame_regressions_replay() {
    for (name, bytes) in regressions("frame") {
        eprintln!("frame regression {name}");
        check_frame(&bytes);
    }
}

#[test]
fn hostile_shapes_are_refused_without_panic() {
    let cases: &[&[u8]] = &[
        &[],
        &[131],
        &[131, 108, 255, 255, 255, 255, 106],
        &[131, 116, 255, 255, 255, 255],
        &[131, 111, 255, 255, 255, 255, 0],
        &[131, 77, 0, 0, 0, 0, 8],
        &[131, 77, 0, 0, 0, 1, 0, 255],
        &[131, 90, 0, 17, 119, 0, 0, 0, 0, 0],
        &[131, 112, 0, 0, 0, 0],
        &[131, 113, 119, 1, 109, 119, 1, 102, 98, 0, 0, 1, 0],
        &[112, 131, 104, 1, 97, 2],
        &[112, 131, 104, 0],
        &[112, 131, 104, 2, 98, 255, 255, 255, 255, 106],
    ];
    for c in cases {
        check_term(c);
        check_frame(c);
    }
}

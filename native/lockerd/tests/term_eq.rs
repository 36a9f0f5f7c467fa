//! `=:=` against a real Erlang node: `eq_oracle.escript` generates pairs
//! of random terms (often one term encoded two ways, or a near variant)
//! with `erl`'s `=:=` verdict; lockerd's canonical terms must agree, hash
//! alike when equal, and re-encode to terms the node finds `=:=` to the
//! original. The store's encoding of keys and values (`lockerd::stored`)
//! must give equal bytes exactly when erl finds the terms `=:=`, whether
//! pids take their short form (a node table with room) or not (a full
//! one), and decode back to the term. Skipped (with a note) when `escript`
//! is not installed.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Command;

use erl_node::codec;
use lockerd::stored::StoreCodec;

fn escript() -> Option<PathBuf> {
    let ok = Command::new("escript").arg("-h").output().is_ok();
    ok.then(|| PathBuf::from("escript"))
}

fn hash(t: &erl_node::Term) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

#[test]
fn equality_is_erlangs_exact_equality() {
    let Some(escript) = escript() else {
        eprintln!("escript not found: =:= oracle test skipped");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/eq_oracle.escript");
    let dir = std::env::temp_dir().join(format!("lockerd_eq_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut total = 0;
    let mut equal = 0;
    // Short pids for every node, and for none.
    let roomy = StoreCodec::new();
    let full = StoreCodec::with_limits(0, 0);
    for seed in ["1", "2", "3"] {
        let pairs = dir.join(format!("pairs_{seed}"));
        let st = Command::new(&escript)
            .arg(&script)
            .args(["gen", pairs.to_str().unwrap(), "2000", seed])
            .status()
            .unwrap();
        assert!(st.success(), "oracle gen failed");
        let bytes = std::fs::read(&pairs).unwrap();
        let mut at = 0;
        let mut re = Vec::new();
        while at < bytes.len() {
            let la = u32_at(&bytes, at);
            let a = &bytes[at + 4..at + 4 + la];
            at += 4 + la;
            let lb = u32_at(&bytes, at);
            let b = &bytes[at + 4..at + 4 + lb];
            at += 4 + lb;
            let verdict = bytes[at] == 1;
            at += 1;
            let ta = codec::decode(a).unwrap_or_else(|e| panic!("decode {a:?}: {e}"));
            let tb = codec::decode(b).unwrap_or_else(|e| panic!("decode {b:?}: {e}"));
            assert_eq!(ta == tb, verdict, "=:= disagrees on\n  {ta}\n  {tb}");
            for c in [&roomy, &full] {
                let (sa, sb) = (c.encode(&ta), c.encode(&tb));
                assert_eq!(
                    sa == sb,
                    verdict,
                    "stored bytes disagree on\n  {ta}\n  {tb}"
                );
                assert_eq!(c.decode(&sa), ta, "stored form round trip");
            }
            if verdict {
                assert_eq!(hash(&ta), hash(&tb), "equal terms hash apart: {ta}");
                equal += 1;
            }
            let enc = codec::to_bytes(&ta);
            re.extend_from_slice(&(enc.len() as u32).to_be_bytes());
            re.extend_from_slice(&enc);
            total += 1;
        }
        let re_path = dir.join(format!("re_{seed}"));
        std::fs::write(&re_path, &re).unwrap();
        let out = Command::new(&escript)
            .arg(&script)
            .args(["check", pairs.to_str().unwrap(), re_path.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.starts_with("ok"),
            "re-encoding check failed: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{total} pairs checked against erl, {equal} equal");
    assert!(
        equal > total / 5 && equal < total,
        "the generator should mix equal and different pairs"
    );
}

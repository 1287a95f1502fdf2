//! Where the weights live: `Model::load` copies them into anonymous memory advised for huge pages
//! (the default) or reads the file's pages (`BITNET_WEIGHT_PAGES=file`); either way every byte,
//! and so every logit, is the file's.

use bitnet_engine::forward::Session;
use bitnet_engine::gguf::GgufFile;
use bitnet_engine::kernels::Kernel;
use bitnet_engine::model::{Model, ModelError, WeightPages};
use bitnet_engine::synth::{build, preset};

#[test]
fn huge_page_copies_hold_the_file_s_bytes_and_give_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny", "i2s", "tq1", "b158-tiny"] {
        let path = dir.path().join(format!("{name}.gguf"));
        build(&preset(name).unwrap()).unwrap().write(&path).unwrap();
        let file = std::fs::read(&path).unwrap();
        let mapped = GgufFile::open(&path).unwrap();
        let copied = GgufFile::open_huge_pages(&path).unwrap();
        assert_eq!(mapped.pages(), "file map");
        // The advice is taken wherever the kernel has THP (any mode); `small pages` where not.
        let pages = copied.pages();
        assert!(
            pages.starts_with("huge pages (THP ") || pages == "small pages",
            "{pages}"
        );
        assert_eq!(mapped.tensors().len(), copied.tensors().len());
        for t in mapped.tensors() {
            // Both against the file's own bytes at the tensor's offset, not against each other.
            let start = (mapped.data_offset() + t.offset) as usize;
            let want = &file[start..start + mapped.tensor_data(t).len()];
            assert_eq!(mapped.tensor_data(t), want, "{name}: {}", t.name);
            assert_eq!(copied.tensor_data(t), want, "{name}: {}", t.name);
        }
        let logits = |pages| {
            let model = Model::load_with(&path, pages).unwrap();
            let mut s = Session::new(&model, 2, Kernel::best());
            let mut out = s.forward(&[1, 7, 300, 2], true, None).unwrap();
            out.extend(s.forward(&[9], false, None).unwrap());
            out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        };
        assert_eq!(
            logits(WeightPages::Huge),
            logits(WeightPages::File),
            "{name}"
        );
    }
}

#[test]
fn the_weight_pages_setting_is_read_and_a_bad_one_named() {
    assert_eq!(WeightPages::parse("huge"), Some(WeightPages::Huge));
    assert_eq!(WeightPages::parse(""), Some(WeightPages::Huge));
    assert_eq!(WeightPages::parse(" file\n"), Some(WeightPages::File));
    for bad in ["Huge", "files", "2m", "yes"] {
        assert_eq!(WeightPages::parse(bad), None, "{bad}");
    }
    let e = ModelError::Setting {
        var: WeightPages::VAR,
        found: "files".into(),
        expected: "x",
    }
    .to_string();
    assert!(
        e.contains("BITNET_WEIGHT_PAGES") && e.contains("`files`"),
        "{e}"
    );
}

#[test]
fn a_reserved_kv_cache_gives_the_same_logits() {
    // Storage reserved ahead (the bench reserves the prompt and decode positions before timing,
    // as llama.cpp makes its cache for n_ctx) holds nothing the forward pass reads differently:
    // reserved before and after a change of cache type, for fewer and more positions than run.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    build(&preset("tiny").unwrap())
        .unwrap()
        .write(&path)
        .unwrap();
    let model = Model::load(&path).unwrap();
    let run = |reserve: Option<usize>, early: bool| {
        let mut s = Session::new(&model, 2, Kernel::best());
        if early {
            if let Some(n) = reserve {
                s.reserve(n);
            }
        }
        s.set_kv_type(bitnet_engine::attention::KvType::F16);
        if !early {
            if let Some(n) = reserve {
                s.reserve(n);
            }
        }
        let mut out = s.forward(&[1, 7, 300, 2, 5, 9, 11], true, None).unwrap();
        for t in [9, 4, 77, 3] {
            out.extend(s.forward(&[t], false, None).unwrap());
        }
        out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
    };
    let want = run(None, false);
    for n in [3, 11, 1000] {
        assert_eq!(
            run(Some(n), true),
            want,
            "reserved {n} before the type change"
        );
        assert_eq!(run(Some(n), false), want, "reserved {n} after it");
    }
}

//! Property tests of the config parser and validator ([`Config::parse`]), the stable
//! stand-in for a fuzz target: cargo-fuzz links a library, and the config lives in the
//! binary crate. Inputs are arbitrary text, TOML-shaped text, and the documented
//! example configs (every ```` ```toml ```` block of docs/config.md and docs/cluster.md
//! that parses as it is) with one key's value replaced, one line removed, or one line
//! repeated.
//!
//! Properties: parsing never panics; every error is one line of text or more and names
//! what is wrong: the changed key, its `[section]`, or the line (TOML syntax and type
//! errors say `line N`); a config that parses prints (`check-config`) as TOML that
//! parses again to the same printed text.

use std::path::Path;

use proptest::prelude::*;

use super::Config;

/// The documented example configs, each the text of one ```` ```toml ```` block.
fn examples() -> Vec<String> {
    let docs = [
        include_str!("../../docs/config.md"),
        include_str!("../../docs/cluster.md"),
    ];
    let mut blocks = Vec::new();
    for doc in docs {
        let mut rest = doc;
        while let Some(start) = rest.find("```toml\n") {
            let body = &rest[start + "```toml\n".len()..];
            let Some(end) = body.find("```") else {
                break;
            };
            blocks.push(body[..end].to_owned());
            rest = &body[end..];
        }
    }
    blocks
}

/// A directory with the files the examples name (secrets), so they validate.
fn base_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, text) in [
        ("authd.secret", "an-example-shared-secret\n"),
        ("relay.secret", "an-example-password\n"),
    ] {
        std::fs::write(dir.path().join(name), text).expect("write a secret file");
    }
    dir
}

/// The examples that parse unchanged: the starting points of the mutations.
fn valid_examples(base: &Path) -> Vec<String> {
    examples()
        .into_iter()
        .filter(|text| Config::parse(text, base).is_ok())
        .collect()
}

/// Values a key may be set to: wrong types, limits, empty and odd strings.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("1".to_owned()),
        Just("4294967296".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("1.5".to_owned()),
        Just("true".to_owned()),
        Just("\"\"".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("[\"127.0.0.1:0\", \"[::1]:99999\"]".to_owned()),
        Just("\"0.0.0.0:25\"".to_owned()),
        Just("\"/\"".to_owned()),
        "\"[ -~]{0,40}\"".prop_map(|s| s.replace(['"', '\\'], "")),
        "[ -~]{0,20}",
    ]
}

/// A key/value line of `text`: its index, its key and the `[section]` it is in.
fn key_lines(text: &str) -> Vec<(usize, String, String)> {
    let mut section = String::new();
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[') {
            section = name
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .to_owned();
        } else if let Some((key, _)) = trimmed.split_once('=')
            && !trimmed.starts_with('#')
        {
            found.push((index, key.trim().to_owned(), section.clone()));
        }
    }
    found
}

/// Parses `text`; a failure must name `key`, its section or a line. A success must
/// print as TOML that parses again the same.
fn check(text: &str, base: &Path, key: &str, section: &str) -> Result<(), TestCaseError> {
    match Config::parse(text, base) {
        Ok(config) => {
            let printed = config.to_toml();
            let again = Config::parse(&printed, base);
            prop_assert!(again.is_ok(), "printed config fails: {again:?}\n{printed}");
            if let Ok(again) = again {
                prop_assert_eq!(again.to_toml(), printed);
            }
        }
        Err(error) => {
            let top = section.split('.').next().unwrap_or_default();
            let named = error.contains("line ")
                || (!key.is_empty() && error.contains(key))
                || (!top.is_empty() && error.contains(top));
            prop_assert!(
                named,
                "error names neither {key:?}, [{section}] nor a line: {error}\n{text}"
            );
        }
    }
    Ok(())
}

/// Replaces the value of the `pick`-th key line of `text` with `value`.
fn with_value(text: &str, pick: usize, value: &str) -> (String, String, String) {
    let keys = key_lines(text);
    let Some((index, key, section)) = keys.get(pick % keys.len().max(1)).cloned() else {
        return (text.to_owned(), String::new(), String::new());
    };
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if let Some(line) = lines.get_mut(index) {
        let indent = &line[..line.len() - line.trim_start().len()];
        *line = format!("{indent}{key} = {value}");
    }
    (lines.join("\n"), key, section)
}

#[test]
fn the_examples_are_found_and_most_are_valid() {
    let base = base_dir();
    let all = examples();
    let valid = valid_examples(base.path());
    assert!(all.len() >= 4, "{} example blocks", all.len());
    assert!(
        valid.len() * 2 >= all.len(),
        "only {} of {} documented examples parse",
        valid.len(),
        all.len()
    );
    assert!(
        valid.iter().any(|v| v.contains("[smtp]")),
        "docs/config.md's full example does not parse"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(error) = Config::parse(&text, Path::new(".")) {
            prop_assert!(!error.is_empty());
        }
    }

    #[test]
    fn toml_shaped_text_never_panics(text in "([\\[\\]a-z_.]{0,12}( = )?[\"a-z0-9:.\\[\\], ]{0,20}\n){0,12}") {
        let base = base_dir();
        check(&text, base.path(), "", "")?;
    }

    #[test]
    fn a_changed_value_is_named(example in any::<prop::sample::Index>(), pick in any::<usize>(), value in value()) {
        let base = base_dir();
        let examples = valid_examples(base.path());
        let text = example.get(&examples);
        let (changed, key, section) = with_value(text, pick, &value);
        check(&changed, base.path(), &key, &section)?;
    }

    #[test]
    fn a_removed_or_repeated_line_is_named(example in any::<prop::sample::Index>(), pick in any::<usize>(), repeat in any::<bool>()) {
        let base = base_dir();
        let examples = valid_examples(base.path());
        let text = example.get(&examples);
        let lines: Vec<&str> = text.lines().collect();
        let at = pick % lines.len().max(1);
        let mut changed: Vec<&str> = lines.clone();
        if repeat {
            changed.insert(at, lines.get(at).copied().unwrap_or_default());
        } else if at < changed.len() {
            changed.remove(at);
        }
        let line = lines.get(at).copied().unwrap_or_default().trim();
        let key = line.split_once('=').map(|(k, _)| k.trim()).unwrap_or_default();
        let section = key_lines(text)
            .into_iter()
            .find(|(index, _, _)| *index == at)
            .map(|(_, _, section)| section)
            .unwrap_or_default();
        // A removed section header or a repeated one is named by its own text.
        let key = if line.starts_with('[') { line.trim_matches(['[', ']']) } else { key };
        check(&changed.join("\n"), base.path(), key, &section)?;
    }
}

#[test]
fn a_changed_value_error_names_the_key() {
    let base = base_dir();
    let full = valid_examples(base.path())
        .into_iter()
        .find(|text| text.contains("[smtp]"))
        .expect("the full example");
    let pick = key_lines(&full)
        .iter()
        .position(|(_, key, section)| key == "max_message_size" && section == "smtp")
        .expect("smtp.max_message_size in the example");
    for (value, needle) in [("0", "max_message_size"), ("\"big\"", "line ")] {
        let (changed, key, _) = with_value(&full, pick, value);
        assert_eq!(key, "max_message_size");
        let error = Config::parse(&changed, base.path()).unwrap_err();
        assert!(error.contains(needle), "{value}: {error}");
    }
}

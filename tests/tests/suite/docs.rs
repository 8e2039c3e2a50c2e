//! The documentation users read: the README (its code fences balance, a
//! stray fence turning the rest of the page into one code block, and every
//! flag its examples give to a dbsafe tool exists) and the man pages (they
//! render without a warning and have the sections operators look for).

use dbsafe_tests::{require, Cmd};
use std::collections::BTreeSet;

/// The dbsafe tools: one crate, named after its binary, per folder of `tools/`.
fn tools() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("tools/")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no tool crates under {dir}");
    names
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md")
}

/// The code blocks of a Markdown text, with the line each opens on.
fn code_blocks(text: &str) -> (Vec<(usize, String)>, Option<usize>) {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            match open.take() {
                Some(b) => blocks.push(b),
                None => open = Some((i + 1, String::new())),
            }
        } else if let Some((_, body)) = open.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    (blocks, open.map(|(n, _)| n))
}

#[test]
fn the_readme_code_fences_balance_and_no_heading_hides_in_a_block() {
    let text = readme();
    let (blocks, unclosed) = code_blocks(&text);
    assert_eq!(
        unclosed, None,
        "a code fence opened on this line is never closed"
    );
    for (line, body) in &blocks {
        assert!(
            !body.lines().any(|l| l.starts_with("## ")),
            "the code block opened on line {line} swallows a section heading: a fence is missing"
        );
    }
    assert!(
        blocks.len() >= 4,
        "the README shows its commands in code blocks"
    );
}

/// Every `TOOL [SUBCOMMAND] --flag` in the README's code blocks.
fn flags_shown(text: &str) -> BTreeSet<(String, String)> {
    let tools = tools();
    let mut out = BTreeSet::new();
    for (_, body) in code_blocks(text).0 {
        let joined = body.replace("\\\n", " ");
        for line in joined.lines() {
            let line = line.split(" #").next().unwrap_or(line);
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(tool_at) = words.iter().position(|w| tools.iter().any(|t| t == w)) else {
                continue;
            };
            // Only commands: the tool opens the line or follows a pipe.
            if !(tool_at == 0 || words[tool_at - 1] == "|") || line.trim_start().starts_with('#') {
                continue;
            }
            let tool = words[tool_at];
            let sub = match tool {
                "walship" => words
                    .get(tool_at + 1)
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            for w in &words[tool_at + 1..] {
                if *w == "|" {
                    break;
                }
                if let Some(flag) = w.strip_prefix("--") {
                    let flag = flag.split('=').next().unwrap_or(flag);
                    if !flag.is_empty() {
                        out.insert((format!("{tool}{sub}"), format!("--{flag}")));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_flag_the_readme_shows_exists() {
    let shown = flags_shown(&readme());
    assert!(
        shown.len() > 20,
        "the README's examples use flags: {shown:?}"
    );
    let mut missing = Vec::new();
    for (command, flag) in &shown {
        let mut words = command.split(' ');
        let tool = words.next().expect("tool");
        let help = Cmd::tool(tool)
            .args(words)
            .arg("--help")
            .succeeds()
            .stdout();
        if !help.contains(&format!("{flag} "))
            && !help.contains(&format!("{flag}\n"))
            && !help.contains(&format!("{flag}="))
            && !help.contains(&format!("{flag},"))
            && !help.contains(&format!("{flag} <"))
        {
            missing.push(format!("{command} {flag}"));
        }
    }
    assert!(
        missing.is_empty(),
        "the README shows flags the tools do not have:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_man_pages_render_without_warnings_and_have_the_operator_sections() {
    require("man", "the Debian package man-db");
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../man"));
    let mut pages: Vec<_> = std::fs::read_dir(dir)
        .expect("man/")
        .flatten()
        .map(|e| e.path())
        .collect();
    pages.sort();
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for t in tools() {
        assert!(
            names.contains(&format!("{t}.1")),
            "no page for {t}: {names:?}"
        );
    }
    assert!(
        names.contains(&"dbsafe.toml.5".to_string()),
        "no page for the config file"
    );
    for page in &pages {
        let r = Cmd::new("man")
            .args(["--warnings", "-l"])
            .arg(page)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .succeeds();
        assert!(
            r.stderr().trim().is_empty(),
            "{}: {}",
            page.display(),
            r.stderr()
        );
        if page.extension().is_some_and(|e| e == "1") {
            for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"] {
                assert!(
                    r.stdout().contains(section),
                    "{} has no {section}",
                    page.display()
                );
            }
        }
    }
    // Examples keep their lines: a path is never broken or hyphenated.
    let snap = Cmd::new("man")
        .args(["-l"])
        .arg(dir.join("dbsnap.1"))
        .env("MANWIDTH", "80")
        .succeeds()
        .stdout();
    assert!(
        snap.lines().any(|l| l.trim() == "dbsnap sqlite:app.db --to /var/backups/dbsafe --env production --recipients-file keys.txt"),
        "the example is reflowed:\n{snap}"
    );
}

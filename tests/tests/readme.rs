//! The README is the first thing a user runs: its code fences balance (a
//! stray fence turns the rest of the page into one code block) and every
//! flag its examples give to a dbsafe tool exists.

use dbsafe_tests::Cmd;
use std::collections::BTreeSet;

const TOOLS: [&str; 6] = [
    "dbsnap",
    "dbverify",
    "dbrestore",
    "dbprune",
    "walship",
    "dbpromote",
];

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
    let mut out = BTreeSet::new();
    for (_, body) in code_blocks(text).0 {
        let joined = body.replace("\\\n", " ");
        for line in joined.lines() {
            let line = line.split(" #").next().unwrap_or(line);
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(tool_at) = words.iter().position(|w| TOOLS.contains(w)) else {
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

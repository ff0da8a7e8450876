//! The documentation holds together: every relative link in `README.md` and the book
//! (`docs/src/`) names a file that exists and, with `#anchor`, a heading in it; every page is in
//! `SUMMARY.md`; the CLI reference carries the built binary's exact `--help` text; the guest shown
//! in the README is the example that is built and tested.

use crate::support::rustcorn_bin;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repository root")
}

fn book_src() -> PathBuf {
    repo_root().join("docs/src")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The Markdown files whose links are checked: the README and every page of the book.
fn documents() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(book_src())
        .expect("docs/src")
        .map(|entry| entry.expect("docs/src entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    pages.insert(0, repo_root().join("README.md"));
    pages
}

/// The text outside fenced code blocks, line by line (line numbers kept for messages).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m => fence = None,
            (None, None) => lines.push((index + 1, line)),
            _ => {}
        }
    }
    lines
}

/// `line` without its inline code spans (a link inside backticks is not a link).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        match after.find(&"`".repeat(ticks)) {
            Some(end) => rest = &after[end + ticks..],
            None => return out + &rest[start..],
        }
    }
    out + rest
}

/// The targets of the inline links `[text](target)` and images on one line.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code_spans(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("").trim_matches(['<', '>']);
        targets.push(target.to_string());
        rest = &after[end..];
    }
    targets
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// The anchors of a Markdown file's headings, derived as mdBook derives them: the heading's text
/// (markup removed), lowercased, alphanumerics, `-` and `_` kept, whitespace turned into `-`,
/// anything else dropped; a repeated id gets `-1`, `-2`, ...
fn heading_anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let id = anchor_of(line[hashes..].trim().trim_end_matches('#').trim());
        let mut unique = id.clone();
        let mut counter = 1;
        while !anchors.insert(unique.clone()) {
            unique = format!("{id}-{counter}");
            counter += 1;
        }
    }
    anchors
}

fn anchor_of(heading: &str) -> String {
    heading_text(heading)
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// A heading's rendered text: code-span backticks, emphasis stars and link targets removed.
fn heading_text(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else { break };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else { break };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    text.replace(['`', '*'], "")
}

/// One broken link: where it is and why.
fn check_link(document: &Path, target: &str) -> Result<(), String> {
    let (path_part, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path_part.is_empty() {
        document.to_path_buf()
    } else {
        document.parent().expect("document directory").join(path_part)
    };
    if !file.exists() {
        return Err(format!("{} does not exist", file.display()));
    }
    let Some(anchor) = anchor else { return Ok(()) };
    if file.extension().is_none_or(|ext| ext != "md") {
        return Err(format!("#{anchor} points into {}, which is not a Markdown file", file.display()));
    }
    if heading_anchors(&read(&file)).contains(anchor) {
        Ok(())
    } else {
        Err(format!("no heading in {} has the anchor #{anchor}", file.display()))
    }
}

#[test]
fn relative_links_name_existing_files_and_headings() {
    let root = repo_root();
    let mut broken = Vec::new();
    let mut checked = 0;
    for document in documents() {
        let text = read(&document);
        for (number, line) in prose_lines(&text) {
            for target in link_targets(line).iter().filter(|t| !t.is_empty() && !is_external(t)) {
                checked += 1;
                if let Err(why) = check_link(&document, target) {
                    let shown = document.strip_prefix(&root).unwrap_or(&document).display().to_string();
                    broken.push(format!("{shown}:{number}: ({target}): {why}"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found: is the link parser broken?");
    assert!(broken.is_empty(), "{} broken link(s):\n{}", broken.len(), broken.join("\n"));
}

#[test]
fn every_book_page_is_in_the_summary() {
    let summary = read(&book_src().join("SUMMARY.md"));
    let listed: BTreeSet<String> = prose_lines(&summary).iter().flat_map(|(_, line)| link_targets(line)).collect();
    let missing: Vec<String> = documents()
        .iter()
        .filter(|path| path.parent() == Some(book_src().as_path()))
        .filter_map(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
        .filter(|name| name != "SUMMARY.md" && !listed.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "pages in docs/src/ that SUMMARY.md does not list (mdBook would not build them): {missing:?}"
    );
}

/// `rustcorn SUBCOMMAND --help` as a user sees it in a 100-column terminal (clap's widest).
fn help_text(subcommand: &str) -> String {
    let output = Command::new(rustcorn_bin())
        .args([subcommand, "--help"])
        .env("COLUMNS", "100")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run rustcorn --help");
    assert!(output.status.success(), "rustcorn {subcommand} --help failed: {output:?}");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The fenced block between `<!-- help:NAME:start -->` and `<!-- help:NAME:end -->`.
fn documented_help(page: &str, name: &str) -> Option<String> {
    let start = format!("<!-- help:{name}:start -->");
    let end = format!("<!-- help:{name}:end -->");
    let inner = &page[page.find(&start)? + start.len()..];
    let inner = &inner[..inner.find(&end)?];
    let body = inner.trim().strip_prefix("```text\n")?.strip_suffix("```")?;
    Some(body.to_string())
}

#[test]
fn cli_page_carries_the_exact_help_text() {
    let page_path = book_src().join("cli.md");
    let page = read(&page_path);
    for subcommand in ["serve", "compile", "check"] {
        let actual = help_text(subcommand);
        let documented = documented_help(&page, subcommand).unwrap_or_else(|| {
            panic!("docs/src/cli.md has no ```text block between <!-- help:{subcommand}:start --> and <!-- help:{subcommand}:end -->")
        });
        if documented != actual {
            let first_difference = documented
                .lines()
                .zip(actual.lines())
                .position(|(doc, bin)| doc != bin)
                .unwrap_or_else(|| documented.lines().count().min(actual.lines().count()));
            panic!(
                "docs/src/cli.md's `rustcorn {subcommand} --help` differs from the binary's, first at line {}:\n  \
                 page:   {:?}\n  binary: {:?}\n\
                 Regenerate: replace the ```text block between <!-- help:{subcommand}:start --> and \
                 <!-- help:{subcommand}:end --> with the output of\n  \
                 COLUMNS=100 target/release/rustcorn {subcommand} --help </dev/null | cat",
                first_difference + 1,
                documented.lines().nth(first_difference).unwrap_or("<end of block>"),
                actual.lines().nth(first_difference).unwrap_or("<end of output>"),
            );
        }
    }
}

#[test]
fn help_names_the_program_and_the_subcommand() {
    for subcommand in ["serve", "compile", "check"] {
        let help = help_text(subcommand);
        let usage = help.lines().find(|line| line.starts_with("Usage:")).unwrap_or("<no Usage: line>");
        assert!(
            usage.starts_with(&format!("Usage: rustcorn {subcommand} ")),
            "`rustcorn {subcommand} --help` says {usage:?}"
        );
    }
}

/// The ```rust blocks of a Markdown file.
fn rust_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match current.as_mut() {
            None if line.trim_start() == "```rust" => current = Some(String::new()),
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn shown_rust_guest_is_the_built_hello_example() {
    let root = repo_root();
    let source = read(&root.join("guest-examples/rust/hello/src/lib.rs"));
    let code: String = source.lines().filter(|line| !line.starts_with("//!")).map(|line| format!("{line}\n")).collect();
    let code = code.trim_start_matches('\n');
    for document in [root.join("README.md"), book_src().join("guests.md")] {
        let blocks = rust_blocks(&read(&document));
        assert!(
            blocks.iter().any(|block| block == code),
            "{} shows a Rust guest that is not guest-examples/rust/hello/src/lib.rs (without its //! lines): \
             copy the file's code into the ```rust block",
            document.display()
        );
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn anchors_follow_mdbook() {
        let text = "# Isolation and `--instance-reuse`\n## TLS and HTTP/2\n## Notes\n## Notes\n\
                    ```\n# not a heading\n```\n### Metrics, health and readiness (`--admin-bind`)\n";
        let anchors = heading_anchors(text);
        let expected = [
            "isolation-and---instance-reuse",
            "tls-and-http2",
            "notes",
            "notes-1",
            "metrics-health-and-readiness---admin-bind",
        ];
        assert_eq!(anchors, expected.into_iter().map(String::from).collect());
    }

    #[test]
    fn links_in_code_are_not_links() {
        let line = "see [a](a.md#x) and `[b](b.md)` and ![c](img/c.png \"title\") and [d](https://x.y/)";
        assert_eq!(link_targets(line), ["a.md#x", "img/c.png", "https://x.y/"]);
    }
}

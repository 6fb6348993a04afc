//! Quoting for the shell scripts providers write (`/bin/sh`): any text becomes one word.

/// `text` as one single-quoted `sh` word: nothing in it is expanded.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `words` as one `sh` command line, each quoted.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_come_back_unchanged_from_a_real_shell() {
        let words: Vec<String> = ["plain", "two words", "it's", "$HOME `id` \"x\"", ""]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let script = format!("for w in {}; do printf '%s\\n' \"$w\"; done", join(&words));
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let said = String::from_utf8_lossy(&out.stdout);
        let back: Vec<&str> = said.split_terminator('\n').collect();
        assert_eq!(back, words);
    }
}

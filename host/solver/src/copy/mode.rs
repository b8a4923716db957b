//! `--chmod` applied to one entry: octal modes replace the permission bits, symbolic ones
//! (`u+x,go=r`, as chmod(1) and BuildKit accept them) edit the source's bits.

use kiln_frontend::command::Chmod;

/// The new mode bits (`0o7777` range) of an entry with `mode`, a directory if `is_dir`.
pub fn apply(chmod: &Chmod, mode: u32, is_dir: bool) -> u32 {
    match chmod {
        Chmod::Octal(m) => *m,
        Chmod::Symbolic(spec) => spec.split(',').fold(mode & 0o7777, |m, clause| clause_apply(clause, m, is_dir)),
    }
}

fn clause_apply(clause: &str, mode: u32, is_dir: bool) -> u32 {
    let who_len = clause.chars().take_while(|c| "ugoa".contains(*c)).count();
    let who = &clause[..who_len];
    // No "who" means all (umask is not applied in image builds).
    let mask = if who.is_empty() || who.contains('a') {
        0o7777
    } else {
        let mut m = 0;
        if who.contains('u') {
            m |= 0o4700;
        }
        if who.contains('g') {
            m |= 0o2070;
        }
        if who.contains('o') {
            m |= 0o1007;
        }
        m
    };
    let mut mode = mode;
    let rest = &clause[who_len..];
    let mut i = 0;
    let bytes = rest.as_bytes();
    while i < bytes.len() {
        let op = bytes[i];
        i += 1;
        let mut perm = 0;
        while i < bytes.len() && !matches!(bytes[i], b'+' | b'-' | b'=') {
            perm |= match bytes[i] {
                b'r' => 0o444,
                b'w' => 0o222,
                b'x' => 0o111,
                b'X' if is_dir || mode & 0o111 != 0 => 0o111,
                b's' => 0o6000,
                b't' => 0o1000,
                _ => 0,
            };
            i += 1;
        }
        let bits = perm & mask;
        mode = match op {
            b'+' => mode | bits,
            b'-' => mode & !bits,
            _ => (mode & !(mask & 0o7777)) | bits,
        };
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(apply(&Chmod::Octal(0o640), 0o777, false), 0o640);
        let s = |x: &str| Chmod::Symbolic(x.into());
        assert_eq!(apply(&s("u+x"), 0o644, false), 0o744);
        assert_eq!(apply(&s("go=r"), 0o777, false), 0o744);
        assert_eq!(apply(&s("a-w"), 0o666, false), 0o444);
        assert_eq!(apply(&s("+X"), 0o644, true), 0o755);
        assert_eq!(apply(&s("+X"), 0o644, false), 0o644);
        assert_eq!(apply(&s("u=rwx,g+s"), 0o000, true), 0o2700);
        assert_eq!(apply(&s("o-rwx"), 0o755, false), 0o750);
    }
}

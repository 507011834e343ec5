//! Text tables for terminals: columns padded by display width, where an East Asian wide
//! or fullwidth character (汉字, かな, 한글, fullwidth forms, most emoji) takes two columns
//! and combining marks and zero-width characters take none.

/// The number of terminal columns `c` takes.
pub fn char_width(c: char) -> usize {
    let u = c as u32;
    if u == 0 || c.is_control() || is_zero_width(u) {
        0
    } else if is_wide(u) {
        2
    } else {
        1
    }
}

/// The number of terminal columns `s` takes.
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` followed by spaces up to `columns` display columns (left-aligned cell).
pub fn pad(s: &str, columns: usize) -> String {
    let mut out = String::with_capacity(s.len() + columns);
    out.push_str(s);
    out.extend(std::iter::repeat_n(' ', columns.saturating_sub(width(s))));
    out
}

/// Spaces up to `columns` display columns, then `s` (right-aligned cell).
pub fn pad_left(s: &str, columns: usize) -> String {
    let mut out: String = std::iter::repeat_n(' ', columns.saturating_sub(width(s))).collect();
    out.push_str(s);
    out
}

fn is_zero_width(u: u32) -> bool {
    matches!(u,
        0x0300..=0x036F   // combining diacritical marks
        | 0x1AB0..=0x1AFF
        | 0x1DC0..=0x1DFF
        | 0x200B..=0x200F // zero-width space, joiners, direction marks
        | 0x2028..=0x202E
        | 0x2060..=0x2064
        | 0x20D0..=0x20FF
        | 0xFE00..=0xFE0F // variation selectors
        | 0xFE20..=0xFE2F
        | 0xFEFF
        | 0xE0100..=0xE01EF)
}

/// East Asian Wide (W) and Fullwidth (F) ranges of Unicode's EastAsianWidth.txt.
fn is_wide(u: u32) -> bool {
    matches!(u,
        0x1100..=0x115F     // Hangul Jamo initials
        | 0x231A..=0x231B
        | 0x2329..=0x232A
        | 0x23E9..=0x23EC
        | 0x23F0
        | 0x23F3
        | 0x25FD..=0x25FE
        | 0x2614..=0x2615
        | 0x2648..=0x2653
        | 0x267F
        | 0x2693
        | 0x26A1
        | 0x26AA..=0x26AB
        | 0x26BD..=0x26BE
        | 0x26C4..=0x26C5
        | 0x26CE
        | 0x26D4
        | 0x26EA
        | 0x26F2..=0x26F3
        | 0x26F5
        | 0x26FA
        | 0x26FD
        | 0x2705
        | 0x270A..=0x270B
        | 0x2728
        | 0x274C
        | 0x274E
        | 0x2753..=0x2755
        | 0x2757
        | 0x2795..=0x2797
        | 0x27B0
        | 0x27BF
        | 0x2B1B..=0x2B1C
        | 0x2B50
        | 0x2B55
        | 0x2E80..=0x303E    // CJK radicals, Kangxi, ideographic description, CJK symbols
        | 0x3041..=0x33FF    // kana, bopomofo, Hangul compatibility, CJK compatibility
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xA000..=0xA4CF    // Yi
        | 0xA960..=0xA97F
        | 0xAC00..=0xD7A3    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFE10..=0xFE19    // vertical forms
        | 0xFE30..=0xFE6F    // CJK compatibility forms, small form variants
        | 0xFF00..=0xFF60    // fullwidth forms
        | 0xFFE0..=0xFFE6
        | 0x16FE0..=0x16FE4
        | 0x17000..=0x18CFF  // Tangut
        | 0x1B000..=0x1B2FF  // kana supplement and extensions, Nüshu
        | 0x1F004
        | 0x1F0CF
        | 0x1F18E
        | 0x1F191..=0x1F19A
        | 0x1F200..=0x1F251
        | 0x1F260..=0x1F265
        | 0x1F300..=0x1F320
        | 0x1F32D..=0x1F335
        | 0x1F337..=0x1F37C
        | 0x1F37E..=0x1F393
        | 0x1F3A0..=0x1F3CA
        | 0x1F3CF..=0x1F3D3
        | 0x1F3E0..=0x1F3F0
        | 0x1F3F4
        | 0x1F3F8..=0x1F43E
        | 0x1F440
        | 0x1F442..=0x1F4FC
        | 0x1F4FF..=0x1F53D
        | 0x1F54B..=0x1F54E
        | 0x1F550..=0x1F567
        | 0x1F57A
        | 0x1F595..=0x1F596
        | 0x1F5A4
        | 0x1F5FB..=0x1F64F
        | 0x1F680..=0x1F6C5
        | 0x1F6CC
        | 0x1F6D0..=0x1F6D2
        | 0x1F6D5..=0x1F6D7
        | 0x1F6DC..=0x1F6DF
        | 0x1F6EB..=0x1F6EC
        | 0x1F6F4..=0x1F6FC
        | 0x1F7E0..=0x1F7EB
        | 0x1F7F0
        | 0x1F90C..=0x1F93A
        | 0x1F93C..=0x1F945
        | 0x1F947..=0x1F9FF
        | 0x1FA70..=0x1FAFF
        | 0x20000..=0x2FFFD  // CJK extensions B..F, compatibility supplement
        | 0x30000..=0x3FFFD) // CJK extensions G..
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_characters_count_two_and_marks_none() {
        assert_eq!(width("org"), 3);
        assert_eq!(width("林新"), 4);
        assert_eq!(width("售后部 A"), 8);
        assert_eq!(width("ｆｕｌｌ"), 8, "fullwidth forms");
        assert_eq!(width("한국"), 4);
        assert_eq!(width("カナ"), 4);
        assert_eq!(width("e\u{301}"), 1, "a combining accent takes no column");
        assert_eq!(width("a\u{200b}b"), 2);
        assert_eq!(width("→·é"), 3, "narrow symbols and Latin stay one column");
    }

    #[test]
    fn pad_fills_to_display_columns() {
        assert_eq!(pad("林新", 6), "林新  ");
        assert_eq!(pad("lin", 6), "lin   ");
        assert_eq!(pad("工程师们", 6), "工程师们", "never cut, never negative");
        assert_eq!(pad_left("林", 4), "  林");
    }
}

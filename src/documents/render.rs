//! Deterministic PDF rendering of assessment documents.
//!
//! The renderer lays the document out itself (greedy word wrapping with the embedded font's real
//! advance widths, line-by-line pagination) and hands printpdf only absolutely positioned text runs,
//! fills and rules. The page count is known before anything is emitted, so every page carries a
//! correct "Page i of n" footer.
//!
//! Determinism: identical inputs produce byte-identical PDFs, in the same process and across
//! processes. printpdf 0.12 draws resource names, the subset tag and the trailer `/ID` from a
//! process-global counter; this module chooses the font resource name itself (derived from the
//! characters used), keeps printpdf's fixed epoch dates and no-XMP default, and replaces the trailer
//! `/ID` with a digest of the file's own bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use printpdf::{
    Color, FontId, Greyscale, Line as PdfLine, LinePoint, OffsetDateTime, Op, PaintMode, ParsedFont,
    PdfDocument, PdfFont, PdfFontHandle, PdfPage, PdfSaveOptions, Point, Pt, Rect, TextItem, TextMatrix,
    WindingOrder,
};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// Paper size of the rendered document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    A4,
    Letter,
}

impl PageSize {
    /// Width and height in PDF points.
    fn dimensions(self) -> (f32, f32) {
        match self {
            PageSize::A4 => (595.276, 841.89),
            PageSize::Letter => (612.0, 792.0),
        }
    }
}

/// A parsed TrueType/OpenType font, shared (via `Arc`) by all renders.
pub struct Font {
    parsed: ParsedFont,
    units_per_em: u32,
    /// Ascent and descent (positive) as fractions of the em.
    ascent: f32,
    descent: f32,
    /// `(glyph id, advance width in font units)` for every BMP code point; glyph id 0 = not mapped.
    bmp: Box<[(u16, u16)]>,
    /// Drawn in place of characters the font cannot display.
    replacement: char,
    /// `"…"` if the font has it, else `"..."` (empty if the font lacks even '.').
    ellipsis: &'static str,
}

impl std::fmt::Debug for Font {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Font")
            .field("name", &self.parsed.font_name)
            .field("units_per_em", &self.units_per_em)
            .field("glyphs", &self.parsed.num_glyphs)
            .finish()
    }
}

impl Font {
    /// Parse a TrueType/OpenType font file's bytes. Err names the problem.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Font, RenderError> {
        if bytes.is_empty() {
            return Err(RenderError::FontParse("font data is empty".into()));
        }
        let mut warnings = Vec::new();
        let parsed = ParsedFont::from_bytes(&bytes, 0, &mut warnings).ok_or_else(|| {
            let detail: Vec<String> = warnings.iter().map(|w| w.message.clone()).collect();
            RenderError::FontParse(if detail.is_empty() {
                "not a readable TrueType/OpenType font".into()
            } else {
                format!("not a readable TrueType/OpenType font: {}", detail.join("; "))
            })
        })?;
        let units_per_em = u32::from(parsed.pdf_font_metrics.units_per_em);
        if !(16..=16384).contains(&units_per_em) {
            return Err(RenderError::FontParse(format!(
                "implausible unitsPerEm {units_per_em}"
            )));
        }
        let upem = units_per_em as f32;
        let metrics = parsed.font_metrics;
        let mut ascent = metrics.ascent.abs() / upem;
        let mut descent = metrics.descent.abs() / upem;
        if !(0.3..=2.0).contains(&ascent) || !(0.0..=1.0).contains(&descent) {
            ascent = 0.8;
            descent = 0.2;
        }

        let mut bmp = vec![(0u16, 0u16); 0x1_0000].into_boxed_slice();
        let mut mapped = 0usize;
        for (cp, slot) in bmp.iter_mut().enumerate() {
            if let Some(gid) = parsed.lookup_glyph_index(cp as u32).filter(|g| *g != 0) {
                *slot = (gid, parsed.get_horizontal_advance(gid));
                mapped += 1;
            }
        }
        if mapped == 0 {
            return Err(RenderError::FontParse(
                "font has no usable Unicode character map".into(),
            ));
        }
        let has = |c: char| bmp[c as usize].0 != 0;
        let replacement = ['\u{FFFD}', '?', ' ']
            .into_iter()
            .find(|c| has(*c))
            .ok_or_else(|| RenderError::FontParse("font has no glyph for U+FFFD, '?' or space".into()))?;
        let ellipsis = if has('…') {
            "…"
        } else if has('.') {
            "..."
        } else {
            ""
        };
        Ok(Font {
            parsed,
            units_per_em,
            ascent,
            descent,
            bmp,
            replacement,
            ellipsis,
        })
    }

    /// Read and parse a font file; Err names the path.
    pub fn load(path: &Path) -> Result<Font, RenderError> {
        let bytes = std::fs::read(path).map_err(|e| RenderError::FontFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Font::from_bytes(bytes).map_err(|e| RenderError::FontFile {
            path: path.to_path_buf(),
            reason: match e {
                RenderError::FontParse(detail) => detail,
                other => other.to_string(),
            },
        })
    }

    fn glyph(&self, c: char) -> Option<(u16, u16)> {
        let cp = c as u32;
        if cp < 0x1_0000 {
            let entry = self.bmp[cp as usize];
            (entry.0 != 0).then_some(entry)
        } else {
            let gid = self.parsed.lookup_glyph_index(cp).filter(|g| *g != 0)?;
            Some((gid, self.parsed.get_horizontal_advance(gid)))
        }
    }

    /// Advance width in font units (0 for characters the font lacks; callers clean text first).
    fn advance(&self, c: char) -> u64 {
        self.glyph(c).map_or(0, |(_, adv)| u64::from(adv))
    }

    fn units(&self, text: &str) -> u64 {
        text.chars().map(|c| self.advance(c)).sum()
    }

    /// Width of `text` in points at `size`.
    fn width(&self, text: &str, size: f32) -> f32 {
        self.units(text) as f32 * size / self.units_per_em as f32
    }

    /// A width in points converted to font units at `size` (never negative).
    fn to_units(&self, width: f32, size: f32) -> u64 {
        if width.is_nan() || size.is_nan() || width <= 0.0 || size <= 0.0 {
            return 0;
        }
        (width * self.units_per_em as f32 / size).floor() as u64
    }
}

/// Rendering options.
#[derive(Clone)]
pub struct RenderOptions {
    pub page: PageSize,
    pub font: Arc<Font>,
    pub max_answer_chars: usize,
}

/// The document to render.
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub title: String,
    pub header: Vec<(String, String)>,
    pub sections: Vec<Section>,
    pub scores: Vec<(String, String)>,
    pub notes: Vec<String>,
    pub footer: String,
}

#[derive(Debug, Clone, Default)]
pub struct Section {
    pub heading: Option<String>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Default)]
pub struct Item {
    pub label: String,
    pub question: String,
    pub answer: String,
    pub score: Option<String>,
}

/// A rendered PDF.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub pages: u32,
    pub sha256: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot parse font: {0}")]
    FontParse(String),
    #[error("font file {}: {reason}", path.display())]
    FontFile { path: PathBuf, reason: String },
    #[error("PDF serialization failed: {0}")]
    Serialize(String),
}

/// Render `doc` to PDF bytes. Same inputs (document, page size, font bytes, limit) → same bytes.
pub fn render(doc: &Document, opts: &RenderOptions) -> Result<Rendered, RenderError> {
    let font: &Font = &opts.font;
    let (page_w, page_h) = opts.page.dimensions();
    let geo = Geometry::new(page_w, page_h);
    let ctx = Ctx { font, geo: &geo };

    let header = ctx.layout_header(doc);
    let footer = ctx.layout_footer(&doc.footer);
    let body_top = geo.page_h - geo.margin - header.height - HEADER_GAP;
    let body_bottom = geo.margin + footer.height + FOOTER_GAP;
    let body_h = (body_top - body_bottom).max(Q_LH * 4.0);

    let body = ctx.layout_body(doc, &header.overflow, opts.max_answer_chars);
    let pages = paginate(&body, body_h);
    let page_count = pages.len();

    // Resource name == subset tag: six capitals derived from the characters actually drawn.
    let mut used = BTreeSet::new();
    let labels: Vec<String> = (1..=page_count)
        .map(|i| ctx.clean_line(&format!("Page {i} of {page_count}")))
        .collect();
    for run in header
        .lines
        .iter()
        .chain(&footer.lines)
        .chain(&body)
        .flat_map(|l| &l.runs)
    {
        used.extend(run.text.chars());
    }
    for label in &labels {
        used.extend(label.chars());
    }
    let font_id = FontId(font_tag(&used));

    let mut pdf_pages = Vec::with_capacity(page_count);
    for (index, placed) in pages.iter().enumerate() {
        let mut page = PageOps::new(&font_id, font, geo.content_w);
        // Header at the top margin.
        let mut y = geo.page_h - geo.margin;
        for line in &header.lines {
            page.line(line, geo.margin, y);
            y -= line.height;
        }
        let rule_y = geo.page_h - geo.margin - header.height + HEADER_RULE_OFFSET;
        page.rule(geo.margin, rule_y, geo.content_w, 0.55, 0.6);
        // Body.
        for (n, &(line_index, offset)) in placed.iter().enumerate() {
            let line = &body[line_index];
            if n == 0 && line.rule_above {
                // The header rule already separates the first line of a page.
                let line = Line {
                    rule_above: false,
                    ..line.clone()
                };
                page.line(&line, geo.margin, body_top - offset);
            } else {
                page.line(line, geo.margin, body_top - offset);
            }
        }
        // Footer: rule, footer text at left, page label at right on the first footer line.
        let footer_top = geo.margin + footer.height;
        page.rule(
            geo.margin,
            footer_top + FOOTER_RULE_OFFSET,
            geo.content_w,
            0.7,
            0.5,
        );
        let mut y = footer_top;
        for line in &footer.lines {
            page.line(line, geo.margin, y);
            y -= line.height;
        }
        let label = &labels[index];
        let label_line = Line {
            height: FOOTER_LH,
            size: FOOTER_SIZE,
            runs: vec![Run {
                x: geo.content_w - font.width(label, FOOTER_SIZE),
                size: FOOTER_SIZE,
                grey: GREY_FOOTER,
                text: label.clone(),
            }],
            ..Line::default()
        };
        page.line(&label_line, geo.margin, footer_top);
        pdf_pages.push(page.finish(page_w, page_h));
    }

    let mut pdf = PdfDocument::new(&ctx.clean_metadata(&doc.title));
    let info = &mut pdf.metadata.info;
    info.producer = PRODUCER.to_string();
    info.creator = PRODUCER.to_string();
    // printpdf defaults these to the epoch already; pinned here so the output never depends on it.
    let epoch = OffsetDateTime::from_unix_timestamp(0).map_err(|e| RenderError::Serialize(e.into()))?;
    info.creation_date = epoch;
    info.modification_date = epoch;
    info.metadata_date = epoch;
    // No XMP packet (it would carry a random instance id): the default custom conformance does not
    // require one, and `pdf.metadata.xmp` stays `None`.
    pdf.metadata.xmp = None;
    pdf.resources
        .fonts
        .map
        .insert(font_id, PdfFont::new(font.parsed.clone()));
    pdf.with_pages(pdf_pages);

    let bytes = serialize(&pdf)?;
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    Ok(Rendered {
        bytes,
        pages: u32::try_from(page_count).unwrap_or(u32::MAX),
        sha256,
    })
}

// ---------------------------------------------------------------------------------------------
// Layout constants (points)
// ---------------------------------------------------------------------------------------------

const PRODUCER: &str = "cdc-bridge";
const MARGIN_MM: f32 = 18.0;

const TITLE_SIZE: f32 = 15.0;
const TITLE_LH: f32 = 18.5;
const HDR_SIZE: f32 = 8.5;
const HDR_LH: f32 = 11.0;
const HDR_COL_GAP: f32 = 16.0;
const HDR_MAX_PAIRS: usize = 16;
const HEADER_GAP: f32 = 14.0;
const HEADER_RULE_OFFSET: f32 = -5.0;

const FOOTER_SIZE: f32 = 7.5;
const FOOTER_LH: f32 = 9.5;
const FOOTER_GAP: f32 = 14.0;
const FOOTER_RULE_OFFSET: f32 = 5.0;

const HEADING_SIZE: f32 = 12.0;
const HEADING_LH: f32 = 16.0;
const Q_SIZE: f32 = 10.0;
const Q_LH: f32 = 13.0;
const A_SIZE: f32 = 9.5;
const A_LH: f32 = 12.5;
const NOTE_SIZE: f32 = 8.5;
const NOTE_LH: f32 = 11.0;

const SECTION_GAP: f32 = 12.0;
const ITEM_GAP: f32 = 6.0;
const ANSWER_INDENT: f32 = 12.0;
const LABEL_MIN_COL: f32 = 22.0;
const LABEL_MAX_COL: f32 = 60.0;
const SCORE_MAX_W: f32 = 110.0;
const BOX_PAD: f32 = 8.0;

const GREY_TEXT: f32 = 0.0;
const GREY_ANSWER: f32 = 0.2;
const GREY_LABEL: f32 = 0.38;
const GREY_MUTED: f32 = 0.45;
const GREY_FOOTER: f32 = 0.35;
const GREY_BOX: f32 = 0.93;

/// Cap for single-line fields (title, header, labels, scores, footer) before any processing.
const MAX_LINE_FIELD_CHARS: usize = 2_000;
/// Cap for questions, headings and notes (answers use `RenderOptions::max_answer_chars`).
const MAX_TEXT_FIELD_CHARS: usize = 20_000;
/// A keep-together chain (heading + first lines) never grows beyond this many lines.
const MAX_KEEP_CHAIN: usize = 6;

struct Geometry {
    page_h: f32,
    margin: f32,
    content_w: f32,
}

impl Geometry {
    fn new(page_w: f32, page_h: f32) -> Self {
        let margin = MARGIN_MM * 72.0 / 25.4;
        Geometry {
            page_h,
            margin,
            content_w: page_w - 2.0 * margin,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Laid-out lines
// ---------------------------------------------------------------------------------------------

/// A text run; `x` is relative to the left content edge, all runs of a line share its baseline.
#[derive(Debug, Clone, Default)]
struct Run {
    x: f32,
    size: f32,
    grey: f32,
    text: String,
}

/// One line box of the flow.
#[derive(Debug, Clone, Default)]
struct Line {
    /// Vertical space before the line; dropped at the top of a page.
    gap_before: f32,
    height: f32,
    /// Font size the baseline is computed for.
    size: f32,
    runs: Vec<Run>,
    /// Grey background across the content width (notes box).
    fill: Option<f32>,
    /// Hairline along the top of the line box.
    rule_above: bool,
    /// Do not end a page between this line and the next one.
    keep_with_next: bool,
}

impl Line {
    fn text(height: f32, size: f32, runs: Vec<Run>) -> Line {
        Line {
            height,
            size,
            runs,
            ..Line::default()
        }
    }
}

struct Header {
    lines: Vec<Line>,
    height: f32,
    /// Header pairs beyond `HDR_MAX_PAIRS`, printed at the start of the body instead.
    overflow: Vec<(String, String)>,
}

struct Footer {
    lines: Vec<Line>,
    height: f32,
}

struct Ctx<'a> {
    font: &'a Font,
    geo: &'a Geometry,
}

impl Ctx<'_> {
    // ----- text cleaning ------------------------------------------------------------------

    /// Normalises `raw` for drawing: CR/LF → LF, tabs and other blanks → space, control and
    /// invisible format characters dropped, characters the font lacks → the replacement glyph.
    /// Single-line mode also turns line breaks into spaces.
    fn clean(&self, raw: &str, single_line: bool) -> String {
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            let c = match c {
                '\r' => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    '\n'
                }
                '\n' | '\u{2028}' | '\u{2029}' | '\u{85}' | '\u{0B}' | '\u{0C}' => '\n',
                '\t' => ' ',
                '\u{AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' => {
                    continue
                }
                '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' => continue,
                c if c.is_control() => continue,
                c if c.is_whitespace() => ' ',
                c => c,
            };
            if c == '\n' {
                out.push(if single_line { ' ' } else { '\n' });
            } else if c == ' ' || self.font.glyph(c).is_some() {
                out.push(c);
            } else {
                out.push(self.font.replacement);
            }
        }
        out
    }

    fn clean_line(&self, raw: &str) -> String {
        let (cut, total) = cut_chars(raw, MAX_LINE_FIELD_CHARS);
        let mut line = collapse_spaces(&self.clean(cut, true));
        if total.is_some() {
            line.push_str(self.font.ellipsis);
        }
        line
    }

    /// Title for the document information dictionary (not drawn, so no glyph substitution).
    fn clean_metadata(&self, raw: &str) -> String {
        let (cut, _) = cut_chars(raw, MAX_LINE_FIELD_CHARS);
        let text: String = cut
            .chars()
            .map(|c| {
                if c.is_control() || c.is_whitespace() {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        collapse_spaces(&text)
    }

    // ----- wrapping -----------------------------------------------------------------------

    /// Greedy word wrap of cleaned text; words wider than a line are broken inside. Blank lines
    /// are kept, runs of spaces collapse. Always returns at least one (possibly empty) line.
    fn wrap(&self, text: &str, size: f32, width: f32) -> Vec<String> {
        let font = self.font;
        let limit = font.to_units(width, size).max(1);
        let space = font.advance(' ');
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            let mut line_w = 0u64;
            for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
                let word_w = font.units(word);
                if !line.is_empty() && line_w + space + word_w <= limit {
                    line.push(' ');
                    line.push_str(word);
                    line_w += space + word_w;
                    continue;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                    line_w = 0;
                }
                if word_w <= limit {
                    line.push_str(word);
                    line_w = word_w;
                    continue;
                }
                // Break an over-long word; each piece holds at least one character.
                for c in word.chars() {
                    let w = font.advance(c);
                    if !line.is_empty() && line_w + w > limit {
                        lines.push(std::mem::take(&mut line));
                        line_w = 0;
                    }
                    line.push(c);
                    line_w += w;
                }
            }
            lines.push(line);
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
        lines
    }

    /// Wrap to at most `max_lines`, ending with an ellipsis when text was dropped.
    fn wrap_limited(&self, text: &str, size: f32, width: f32, max_lines: usize) -> Vec<String> {
        let mut lines = self.wrap(text, size, width);
        if lines.len() > max_lines {
            lines.truncate(max_lines.max(1));
            if let Some(last) = lines.last_mut() {
                *last = self.ellipsize(&format!("{last} "), size, width, true);
            }
        }
        lines
    }

    /// Shorten `text` to fit `width`, appending an ellipsis if anything was removed (or if
    /// `force_ellipsis`).
    fn ellipsize(&self, text: &str, size: f32, width: f32, force_ellipsis: bool) -> String {
        let font = self.font;
        let limit = font.to_units(width, size);
        if !force_ellipsis && font.units(text) <= limit {
            return text.to_string();
        }
        let budget = limit.saturating_sub(font.units(font.ellipsis));
        let mut out = String::new();
        let mut used = 0u64;
        for c in text.chars() {
            let w = font.advance(c);
            if used + w > budget {
                break;
            }
            out.push(c);
            used += w;
        }
        let mut out = out.trim_end().to_string();
        out.push_str(font.ellipsis);
        out
    }

    // ----- header / footer ----------------------------------------------------------------

    fn layout_header(&self, doc: &Document) -> Header {
        let content_w = self.geo.content_w;
        let mut lines = Vec::new();
        let title = self.clean_line(&doc.title);
        if !title.is_empty() {
            for text in self.wrap_limited(&title, TITLE_SIZE, content_w, 2) {
                lines.push(Line::text(
                    TITLE_LH,
                    TITLE_SIZE,
                    vec![Run {
                        x: 0.0,
                        size: TITLE_SIZE,
                        grey: GREY_TEXT,
                        text,
                    }],
                ));
            }
            if let Some(last) = lines.last_mut() {
                last.height += 3.0;
            }
        }

        let shown = doc.header.len().min(HDR_MAX_PAIRS);
        let col_w = (content_w - HDR_COL_GAP) / 2.0;
        // Two columns filled top to bottom, so reading down the left column and then the right one
        // follows the given order (as does text extraction).
        let rows = shown.div_ceil(2);
        for r in 0..rows {
            let mut cells: Vec<Vec<Run>> = Vec::new();
            let row = [
                doc.header.get(r),
                (r + rows < shown).then(|| &doc.header[r + rows]),
            ];
            for (col, (label, value)) in row.into_iter().enumerate().filter_map(|(c, p)| Some((c, p?))) {
                let x0 = col as f32 * (col_w + HDR_COL_GAP);
                let label = self.clean_line(label);
                let label = if label.is_empty() {
                    String::new()
                } else {
                    format!("{label}:")
                };
                let label = self.ellipsize(&label, HDR_SIZE, col_w * 0.45, false);
                let label_w = if label.is_empty() {
                    0.0
                } else {
                    self.font.width(&label, HDR_SIZE) + 4.0
                };
                let value = self.clean_line(value);
                let value_lines = self.wrap_limited(&value, HDR_SIZE, col_w - label_w, 2);
                for (i, text) in value_lines.into_iter().enumerate() {
                    if cells.len() <= i {
                        cells.push(Vec::new());
                    }
                    if i == 0 && !label.is_empty() {
                        cells[i].push(Run {
                            x: x0,
                            size: HDR_SIZE,
                            grey: GREY_LABEL,
                            text: label.clone(),
                        });
                    }
                    cells[i].push(Run {
                        x: x0 + label_w,
                        size: HDR_SIZE,
                        grey: GREY_TEXT,
                        text,
                    });
                }
            }
            for runs in cells {
                lines.push(Line::text(HDR_LH, HDR_SIZE, runs));
            }
        }
        let height = lines.iter().map(|l| l.height).sum();
        Header {
            lines,
            height,
            overflow: doc.header[shown..].to_vec(),
        }
    }

    fn layout_footer(&self, footer: &str) -> Footer {
        let reserve = self.font.width("Page 99999 of 99999", FOOTER_SIZE) + 12.0;
        let width = (self.geo.content_w - reserve).max(self.geo.content_w * 0.4);
        let text = self.clean_line(footer);
        let lines: Vec<Line> = self
            .wrap_limited(&text, FOOTER_SIZE, width, 2)
            .into_iter()
            .map(|text| {
                Line::text(
                    FOOTER_LH,
                    FOOTER_SIZE,
                    vec![Run {
                        x: 0.0,
                        size: FOOTER_SIZE,
                        grey: GREY_FOOTER,
                        text,
                    }],
                )
            })
            .collect();
        let height = lines.len() as f32 * FOOTER_LH;
        Footer { lines, height }
    }

    // ----- body ---------------------------------------------------------------------------

    fn layout_body(
        &self,
        doc: &Document,
        overflow: &[(String, String)],
        max_answer_chars: usize,
    ) -> Vec<Line> {
        let mut out = Vec::new();
        if !overflow.is_empty() {
            self.layout_pairs(&mut out, "Additional details", overflow);
        }
        if !doc.notes.is_empty() {
            self.layout_notes(&mut out, &doc.notes);
        }
        let mut item_count = 0usize;
        for section in &doc.sections {
            if let Some(heading) = &section.heading {
                let (cut, total) = cut_chars(heading, MAX_TEXT_FIELD_CHARS);
                let text = collapse_spaces(&self.clean(cut, true));
                if !text.is_empty() {
                    let first = out.len();
                    self.push_wrapped(&mut out, &text, 0.0, HEADING_SIZE, HEADING_LH, GREY_TEXT);
                    if let Some(total) = total {
                        self.push_truncation(&mut out, "text", total, MAX_TEXT_FIELD_CHARS, 0.0);
                    }
                    if let Some(line) = out.get_mut(first) {
                        line.gap_before = SECTION_GAP;
                    }
                    for line in &mut out[first..] {
                        line.keep_with_next = true;
                    }
                }
            }
            for item in &section.items {
                self.layout_item(&mut out, item, max_answer_chars);
                item_count += 1;
            }
        }
        if item_count == 0 {
            let text = self.clean_line("No items recorded.");
            let mut line = Line::text(
                A_LH,
                A_SIZE,
                vec![Run {
                    x: 0.0,
                    size: A_SIZE,
                    grey: GREY_MUTED,
                    text,
                }],
            );
            line.gap_before = SECTION_GAP;
            out.push(line);
        }
        if !doc.scores.is_empty() {
            self.layout_pairs(&mut out, "Scores", &doc.scores);
        }
        out
    }

    /// Wraps `text` at (`x`, `size`) and appends one line per wrapped line.
    fn push_wrapped(&self, out: &mut Vec<Line>, text: &str, x: f32, size: f32, lh: f32, grey: f32) {
        let width = self.geo.content_w - x;
        for text in self.wrap(text, size, width) {
            out.push(Line::text(lh, size, vec![Run { x, size, grey, text }]));
        }
    }

    fn push_truncation(&self, out: &mut Vec<Line>, what: &str, total: usize, shown: usize, x: f32) {
        let note = self.clean_line(&format!(
            "[{what} truncated: {total} characters, first {shown} shown]"
        ));
        self.push_wrapped(out, &note, x, NOTE_SIZE, NOTE_LH, GREY_MUTED);
    }

    fn layout_item(&self, out: &mut Vec<Line>, item: &Item, max_answer_chars: usize) {
        let font = self.font;
        let content_w = self.geo.content_w;

        let label = self.clean_line(&item.label);
        let (label, indent) = if label.is_empty() {
            (label, 0.0)
        } else {
            let label = self.ellipsize(&label, Q_SIZE, LABEL_MAX_COL - 6.0, false);
            let indent = (font.width(&label, Q_SIZE) + 6.0).clamp(LABEL_MIN_COL, LABEL_MAX_COL);
            (label, indent)
        };
        let score = item
            .score
            .as_deref()
            .map(|s| self.clean_line(s))
            .filter(|s| !s.is_empty());
        let score = score.map(|s| self.ellipsize(&s, Q_SIZE, SCORE_MAX_W, false));
        let score_w = score.as_deref().map_or(0.0, |s| font.width(s, Q_SIZE) + 10.0);
        let question_w = (content_w - indent - score_w).max(content_w * 0.4);

        let (cut, q_total) = cut_chars(&item.question, MAX_TEXT_FIELD_CHARS);
        let question = self.clean(cut, false);
        let question = question.trim_matches(|c: char| c == '\n' || c == ' ');
        let first = out.len();
        for (i, text) in self.wrap(question, Q_SIZE, question_w).into_iter().enumerate() {
            let mut runs = Vec::new();
            if i == 0 {
                if !label.is_empty() {
                    runs.push(Run {
                        x: 0.0,
                        size: Q_SIZE,
                        grey: GREY_TEXT,
                        text: label.clone(),
                    });
                }
                if let Some(score) = &score {
                    let x = content_w - font.width(score, Q_SIZE);
                    runs.push(Run {
                        x,
                        size: Q_SIZE,
                        grey: GREY_TEXT,
                        text: score.clone(),
                    });
                }
            }
            runs.push(Run {
                x: indent,
                size: Q_SIZE,
                grey: GREY_TEXT,
                text,
            });
            out.push(Line::text(Q_LH, Q_SIZE, runs));
        }
        if let Some(total) = q_total {
            self.push_truncation(out, "question", total, MAX_TEXT_FIELD_CHARS, indent);
        }
        // Keep the question together with the first answer line.
        for line in &mut out[first..] {
            line.keep_with_next = true;
        }
        if let Some(line) = out.get_mut(first) {
            line.gap_before = ITEM_GAP;
        }

        // Truncate before any cleaning or wrapping work: a multi-megabyte answer costs one scan.
        let x = indent + ANSWER_INDENT;
        let (cut, a_total) = cut_chars(&item.answer, max_answer_chars);
        let answer = self.clean(cut, false);
        let answer = answer.trim_matches(|c: char| c == '\n' || c == ' ');
        if answer.is_empty() && a_total.is_none() {
            let text = self.clean_line("(no answer)");
            out.push(Line::text(
                A_LH,
                A_SIZE,
                vec![Run {
                    x,
                    size: A_SIZE,
                    grey: GREY_MUTED,
                    text,
                }],
            ));
        } else if !answer.is_empty() {
            let start = out.len();
            self.push_wrapped(out, answer, x, A_SIZE, A_LH, GREY_ANSWER);
            // No single answer line left alone at the top of a page.
            if out.len() - start >= 2 {
                let len = out.len();
                out[len - 2].keep_with_next = true;
            }
        }
        if let Some(total) = a_total {
            self.push_truncation(out, "answer", total, max_answer_chars, x);
        }
    }

    fn layout_notes(&self, out: &mut Vec<Line>, notes: &[String]) {
        let content_w = self.geo.content_w;
        let first = out.len();
        out.push(Line {
            height: BOX_PAD * 0.75,
            ..Line::default()
        });
        let heading = self.clean_line("Notes");
        out.push(Line::text(
            Q_LH,
            Q_SIZE,
            vec![Run {
                x: BOX_PAD,
                size: Q_SIZE,
                grey: GREY_TEXT,
                text: heading,
            }],
        ));
        let bullet = self.clean_line("•");
        let text_x = BOX_PAD + 10.0;
        for note in notes {
            let (cut, total) = cut_chars(note, MAX_TEXT_FIELD_CHARS);
            let text = self.clean(cut, false);
            let text = text.trim_matches(|c: char| c == '\n' || c == ' ');
            let start = out.len();
            for line in self.wrap(text, NOTE_SIZE + 0.5, content_w - text_x - BOX_PAD) {
                out.push(Line::text(
                    NOTE_LH + 0.5,
                    NOTE_SIZE + 0.5,
                    vec![Run {
                        x: text_x,
                        size: NOTE_SIZE + 0.5,
                        grey: GREY_TEXT,
                        text: line,
                    }],
                ));
            }
            if let Some(line) = out.get_mut(start) {
                line.runs.insert(
                    0,
                    Run {
                        x: BOX_PAD,
                        size: NOTE_SIZE + 0.5,
                        grey: GREY_TEXT,
                        text: bullet.clone(),
                    },
                );
            }
            if let Some(total) = total {
                let note = self.clean_line(&format!(
                    "[note truncated: {total} characters, first {MAX_TEXT_FIELD_CHARS} shown]"
                ));
                for line in self.wrap(&note, NOTE_SIZE, content_w - text_x - BOX_PAD) {
                    out.push(Line::text(
                        NOTE_LH,
                        NOTE_SIZE,
                        vec![Run {
                            x: text_x,
                            size: NOTE_SIZE,
                            grey: GREY_MUTED,
                            text: line,
                        }],
                    ));
                }
            }
        }
        out.push(Line {
            height: BOX_PAD * 0.75,
            ..Line::default()
        });
        let len = out.len();
        for line in &mut out[first..] {
            line.fill = Some(GREY_BOX);
        }
        // Keep the box's top padding with the heading and first note, and the closing padding with
        // the last note line.
        for line in out[first..(first + 3).min(len)].iter_mut() {
            line.keep_with_next = true;
        }
        if len >= 2 {
            out[len - 2].keep_with_next = true;
        }
        out[first].gap_before = 6.0;
    }

    /// A titled block of label/value pairs in two columns (scores, overflowing header fields).
    fn layout_pairs(&self, out: &mut Vec<Line>, title: &str, pairs: &[(String, String)]) {
        let font = self.font;
        let content_w = self.geo.content_w;
        let first = out.len();
        let title = self.clean_line(title);
        out.push(Line::text(
            HEADING_LH + 4.0,
            HEADING_SIZE,
            vec![Run {
                x: 0.0,
                size: HEADING_SIZE,
                grey: GREY_TEXT,
                text: title,
            }],
        ));
        out[first].gap_before = SECTION_GAP + 4.0;
        out[first].rule_above = true;
        out[first].keep_with_next = true;

        let cleaned: Vec<(String, String)> = pairs
            .iter()
            .map(|(l, v)| (self.clean_line(l), self.clean_line(v)))
            .collect();
        let widest = cleaned
            .iter()
            .map(|(l, _)| font.width(l, Q_SIZE))
            .fold(0.0f32, f32::max);
        let label_col = (widest + 14.0).min(content_w * 0.45);
        for (label, value) in &cleaned {
            let label_lines = self.wrap(label, Q_SIZE, label_col - 14.0);
            let value_lines = self.wrap(value, Q_SIZE, content_w - label_col);
            let rows = label_lines.len().max(value_lines.len());
            let start = out.len();
            for i in 0..rows {
                let mut runs = Vec::new();
                if let Some(text) = label_lines.get(i) {
                    runs.push(Run {
                        x: 0.0,
                        size: Q_SIZE,
                        grey: GREY_LABEL,
                        text: text.clone(),
                    });
                }
                if let Some(text) = value_lines.get(i) {
                    runs.push(Run {
                        x: label_col,
                        size: Q_SIZE,
                        grey: GREY_TEXT,
                        text: text.clone(),
                    });
                }
                let mut line = Line::text(Q_LH, Q_SIZE, runs);
                line.keep_with_next = i + 1 < rows;
                out.push(line);
            }
            if let Some(line) = out.get_mut(start) {
                line.gap_before = 2.0;
            }
        }
    }
}

/// Splits `s` after `max` characters. Returns the kept prefix and, when something was cut, the
/// total character count of `s`.
fn cut_chars(s: &str, max: usize) -> (&str, Option<usize>) {
    match s.char_indices().nth(max) {
        Some((idx, _)) => (&s[..idx], Some(max + s[idx..].chars().count())),
        None => (s, None),
    }
}

/// Trims and collapses runs of spaces (single-line fields).
fn collapse_spaces(s: &str) -> String {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------------

/// Assigns lines to pages. Returns, per page, `(line index, offset of the line box's top from the
/// body top)`. Always at least one page.
fn paginate(lines: &[Line], body_h: f32) -> Vec<Vec<(usize, f32)>> {
    let mut pages: Vec<Vec<(usize, f32)>> = vec![Vec::new()];
    let mut y = 0.0f32;
    for (i, line) in lines.iter().enumerate() {
        let page_empty = pages.last().is_none_or(|p| p.is_empty());
        let gap = if page_empty { 0.0 } else { line.gap_before };
        if !page_empty {
            // Height of the keep-together chain starting here.
            let mut chain = gap + line.height;
            let mut j = i;
            while lines[j].keep_with_next && j + 1 < lines.len() && j - i + 1 < MAX_KEEP_CHAIN {
                j += 1;
                chain += lines[j].gap_before + lines[j].height;
            }
            let chain_breaks = y + chain > body_h && chain <= body_h;
            if chain_breaks || y + gap + line.height > body_h {
                pages.push(Vec::new());
                y = 0.0;
            }
        }
        let page_empty = pages.last().is_none_or(|p| p.is_empty());
        let gap = if page_empty { 0.0 } else { line.gap_before };
        y += gap;
        if let Some(page) = pages.last_mut() {
            page.push((i, y));
        }
        y += line.height;
    }
    pages
}

// ---------------------------------------------------------------------------------------------
// Emission
// ---------------------------------------------------------------------------------------------

/// Collects the operations of one page: graphics first, then a single text object.
struct PageOps<'a> {
    font_id: &'a FontId,
    font: &'a Font,
    content_w: f32,
    graphics: Vec<Op>,
    text: Vec<Op>,
    cur_size: Option<f32>,
    cur_grey: Option<f32>,
}

impl<'a> PageOps<'a> {
    fn new(font_id: &'a FontId, font: &'a Font, content_w: f32) -> Self {
        PageOps {
            font_id,
            font,
            content_w,
            graphics: Vec::new(),
            text: Vec::new(),
            cur_size: None,
            cur_grey: None,
        }
    }

    /// Draws `line` with its box's top-left corner at (`left`, `top`).
    fn line(&mut self, line: &Line, left: f32, top: f32) {
        let content_w = self.content_w;
        if let Some(grey) = line.fill {
            self.graphics.push(Op::SetFillColor {
                col: grey_color(grey),
            });
            self.graphics.push(Op::DrawRectangle {
                rectangle: Rect {
                    x: Pt(r2(left)),
                    y: Pt(r2(top - line.height)),
                    width: Pt(r2(content_w)),
                    height: Pt(r2(line.height)),
                    mode: Some(PaintMode::Fill),
                    winding_order: Some(WindingOrder::NonZero),
                },
            });
        }
        if line.rule_above {
            self.rule(left, top, content_w, 0.5, 0.55);
        }
        let font = self.font;
        let em_box = (font.ascent + font.descent) * line.size;
        let baseline = top - line.height + (line.height - em_box) / 2.0 + font.descent * line.size;
        for run in line.runs.iter().filter(|r| !r.text.is_empty()) {
            if self.cur_size != Some(run.size) {
                self.text.push(Op::SetFont {
                    font: PdfFontHandle::External(self.font_id.clone()),
                    size: Pt(run.size),
                });
                self.cur_size = Some(run.size);
            }
            if self.cur_grey != Some(run.grey) {
                self.text.push(Op::SetFillColor {
                    col: grey_color(run.grey),
                });
                self.cur_grey = Some(run.grey);
            }
            self.text.push(Op::SetTextMatrix {
                matrix: TextMatrix::Translate(Pt(r2(left + run.x)), Pt(r2(baseline))),
            });
            self.text.push(Op::ShowText {
                items: vec![TextItem::Text(run.text.clone())],
            });
        }
    }

    fn rule(&mut self, x: f32, y: f32, width: f32, thickness: f32, grey: f32) {
        self.graphics.push(Op::SetOutlineColor {
            col: grey_color(grey),
        });
        self.graphics.push(Op::SetOutlineThickness { pt: Pt(thickness) });
        let point = |x: f32| LinePoint {
            p: Point {
                x: Pt(r2(x)),
                y: Pt(r2(y)),
            },
            bezier: false,
        };
        self.graphics.push(Op::DrawLine {
            line: PdfLine {
                points: vec![point(x), point(x + width)],
                is_closed: false,
            },
        });
    }

    fn finish(self, page_w: f32, page_h: f32) -> PdfPage {
        let mut ops = self.graphics;
        if !self.text.is_empty() {
            ops.push(Op::StartTextSection);
            ops.extend(self.text);
            ops.push(Op::EndTextSection);
        }
        let rect = Rect::from_wh(Pt(page_w), Pt(page_h));
        PdfPage {
            media_box: rect.clone(),
            trim_box: rect.clone(),
            crop_box: rect,
            ops,
        }
    }
}

fn grey_color(grey: f32) -> Color {
    Color::Greyscale(Greyscale {
        percent: grey.clamp(0.0, 1.0),
        icc_profile: None,
    })
}

/// Rounds a coordinate to 1/100 pt (keeps content streams short).
fn r2(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

/// Six capital letters derived from the set of drawn characters: used both as the font resource
/// name and as the subset tag in `/BaseFont` (printpdf takes the tag from the resource name).
fn font_tag(used: &BTreeSet<char>) -> String {
    let mut hasher = Sha256::new();
    for c in used {
        hasher.update((*c as u32).to_be_bytes());
    }
    hasher
        .finalize()
        .iter()
        .take(6)
        .map(|b| char::from(b'A' + b % 26))
        .collect()
}

/// Placeholder for the trailer `/ID` strings; 32 bytes, replaced after saving.
const ID_PLACEHOLDER: &[u8; 32] = b"cdcbridge-document-id-0000000000";

/// Serializes with subsetting and stream compression, then pins the trailer `/ID`.
///
/// printpdf fills `/ID` from a process-global counter, so two renders in one process would differ.
/// The ID strings are set to a fixed-length placeholder before saving, and afterwards overwritten
/// in place with the first 16 bytes (hex) of the SHA-256 of the placeholder-bearing file. Lengths
/// are unchanged, so the cross-reference offsets stay valid.
fn serialize(pdf: &PdfDocument) -> Result<Vec<u8>, RenderError> {
    let save = PdfSaveOptions {
        optimize: true,
        subset_fonts: true,
        secure: true,
        image_optimization: None,
    };
    let mut warnings = Vec::new();
    let mut lopdf_doc = pdf.to_lopdf_document(&save, &mut warnings);
    let mut placeholders = 0;
    if let Ok(ids) = lopdf_doc.trailer.get_mut(b"ID").and_then(|o| o.as_array_mut()) {
        for id in ids.iter_mut() {
            if let Ok(bytes) = id.as_str_mut() {
                *bytes = ID_PLACEHOLDER.to_vec();
                placeholders += 1;
            }
        }
    }
    if placeholders == 0 {
        // Unknown trailer layout: drop the (random) ID rather than emit a non-deterministic file.
        lopdf_doc.trailer.remove(b"ID");
    }
    // The info dictionary: printpdf always writes `/GTS_PDFXVersion` (which makes readers report
    // the file as PDF/X) and empty `/Identifier`, `/Author`, `/Subject`, `/Keywords`; drop them.
    if let Ok(info_id) = lopdf_doc.trailer.get(b"Info").and_then(|o| o.as_reference()) {
        if let Ok(info) = lopdf_doc.get_object_mut(info_id).and_then(|o| o.as_dict_mut()) {
            info.remove(b"GTS_PDFXVersion");
            for key in [b"Identifier".as_slice(), b"Author", b"Subject", b"Keywords"] {
                // Empty, or just a UTF-16BE byte order mark.
                let empty = info
                    .get(key)
                    .and_then(|o| o.as_str())
                    .is_ok_and(|v| v.is_empty() || v == [0xFE, 0xFF]);
                if empty {
                    info.remove(key);
                }
            }
        }
    }
    lopdf_doc.compress();
    let mut bytes = Vec::new();
    lopdf_doc
        .save_to(&mut bytes)
        .map_err(|e| RenderError::Serialize(e.to_string()))?;

    let trailer_at = find_last(&bytes, b"trailer").unwrap_or(0);
    let digest = Sha256::digest(&bytes);
    let hex: Vec<u8> = digest
        .iter()
        .take(16)
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect();
    let mut at = trailer_at;
    while let Some(pos) = find_from(&bytes, ID_PLACEHOLDER, at) {
        bytes[pos..pos + ID_PLACEHOLDER.len()].copy_from_slice(&hex);
        at = pos + ID_PLACEHOLDER.len();
    }
    Ok(bytes)
}

fn find_from(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

// `Font` is shared by worker threads through `Arc<Font>`.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Font>();
    assert_send_sync::<RenderOptions>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

    fn font() -> Arc<Font> {
        static FONT: OnceLock<Arc<Font>> = OnceLock::new();
        FONT.get_or_init(|| Arc::new(Font::load(Path::new(FONT_PATH)).expect("DejaVuSans.ttf must load")))
            .clone()
    }

    fn opts(max_answer_chars: usize) -> RenderOptions {
        RenderOptions {
            page: PageSize::A4,
            font: font(),
            max_answer_chars,
        }
    }

    fn item(i: usize) -> Item {
        Item {
            label: format!("{i}."),
            question: format!(
                "Question {i:03}: over the last two weeks, how often have you been bothered by this problem?"
            ),
            answer: format!(
                "Answer {i:03}: more than half the days; the patient described it in some detail."
            ),
            score: Some(format!("{}", i % 4)),
        }
    }

    fn doc(items: usize) -> Document {
        Document {
            title: "PHQ-9 Depression Screening".into(),
            header: vec![
                ("Patient".into(), "Jane Example".into()),
                ("Date of birth".into(), "1980-01-02".into()),
                ("Record number".into(), "MRN-1".into()),
                ("Facility".into(), "Acme".into()),
                ("Assessment".into(), "PHQ-9".into()),
                ("Date".into(), "2026-11-24".into()),
                ("Clinician".into(), "Dr. Who".into()),
            ],
            sections: vec![Section {
                heading: Some("Symptoms".into()),
                items: (1..=items).map(item).collect(),
            }],
            scores: vec![
                ("Total score".into(), "14.00".into()),
                ("Severity".into(), "Moderate".into()),
            ],
            notes: vec![],
            footer: "Source: v1 pinpoint_acme.assessments id=42 · v1 change 2026-11-25 10:00:00 UTC".into(),
        }
    }

    /// Text extracted by poppler's `pdftotext`, or `None` (with a note) when it is not installed.
    fn pdftotext(bytes: &[u8], name: &str) -> Option<String> {
        if Command::new("pdftotext").arg("-v").output().is_err() {
            eprintln!("note: pdftotext not on PATH; skipping text-extraction checks in {name}");
            return None;
        }
        let path = std::env::temp_dir().join(format!("render-test-{}-{name}.pdf", std::process::id()));
        std::fs::write(&path, bytes).expect("write temp pdf");
        let out = Command::new("pdftotext")
            .arg("-enc")
            .arg("UTF-8")
            .arg(&path)
            .arg("-")
            .output();
        let _ = std::fs::remove_file(&path);
        let out = out.expect("run pdftotext");
        assert!(
            out.status.success(),
            "pdftotext failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8(out.stdout).expect("pdftotext output is UTF-8"))
    }

    #[test]
    fn deterministic_bytes() {
        let d = doc(25);
        let a = render(&d, &opts(10_000)).unwrap();
        // Unrelated renders in between must not influence the next one (printpdf's id counter).
        render(&doc(3), &opts(10_000)).unwrap();
        render(&Document::default(), &opts(10)).unwrap();
        let b = render(&d, &opts(10_000)).unwrap();
        assert_eq!(a.bytes, b.bytes);
        assert_eq!(a.sha256, b.sha256);
        let digest: [u8; 32] = Sha256::digest(&a.bytes).into();
        assert_eq!(a.sha256, digest);
        assert!(a.bytes.starts_with(b"%PDF-"));
        // Different content → different bytes and /ID.
        let c = render(&doc(24), &opts(10_000)).unwrap();
        assert_ne!(a.sha256, c.sha256);
    }

    #[test]
    fn deterministic_across_threads() {
        let d = Arc::new(doc(40));
        let expected = render(&d, &opts(10_000)).unwrap().bytes;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let d = Arc::clone(&d);
                std::thread::spawn(move || render(&d, &opts(10_000)).unwrap().bytes)
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), expected);
        }
    }

    #[test]
    fn metadata_is_fixed() {
        let r = render(&doc(2), &opts(10_000)).unwrap();
        let text = String::from_utf8_lossy(&r.bytes);
        assert!(text.contains("D:19700101000000"), "fixed creation date");
        assert!(!text.contains("GTS_PDFXVersion"));
        assert!(!text.contains("/Metadata"), "no XMP packet");
        assert!(
            !text.contains(std::str::from_utf8(ID_PLACEHOLDER).unwrap()),
            "ID placeholder replaced"
        );
        assert!(text.contains("/ID[("), "trailer ID present");
    }

    #[test]
    fn many_items_paginate_with_page_numbers() {
        let r = render(&doc(300), &opts(10_000)).unwrap();
        assert!(r.pages > 1, "300 items must need several pages, got {}", r.pages);
        let Some(text) = pdftotext(&r.bytes, "many_items") else {
            return;
        };
        let n = r.pages;
        for i in 1..=n {
            assert!(
                text.contains(&format!("Page {i} of {n}")),
                "missing 'Page {i} of {n}'"
            );
        }
        assert!(!text.contains(&format!("Page {} of {n}", n + 1)));
        // Every question appears, in order.
        let mut at = 0;
        for i in 1..=300 {
            let needle = format!("Question {i:03}:");
            let found = text[at..]
                .find(&needle)
                .unwrap_or_else(|| panic!("{needle} missing or out of order"));
            at += found + needle.len();
        }
        assert_eq!(text.matches("Page 1 of").count(), 1);
        assert!(text.contains("Total score"));
    }

    #[test]
    fn questions_in_order() {
        let r = render(&doc(25), &opts(10_000)).unwrap();
        let Some(text) = pdftotext(&r.bytes, "order") else {
            return;
        };
        let positions: Vec<usize> = (1..=25)
            .map(|i| text.find(&format!("Question {i:03}:")).expect("question present"))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "questions out of order"
        );
        let header: Vec<usize> = [
            "Patient:",
            "Date of birth:",
            "Record number:",
            "Facility:",
            "Clinician:",
        ]
        .iter()
        .map(|l| text.find(l).expect("header label present"))
        .collect();
        assert!(
            header.windows(2).all(|w| w[0] < w[1]),
            "header fields out of order"
        );
        let a = text.find("Answer 001:").unwrap();
        assert!(
            positions[0] < a && a < positions[1],
            "answer follows its question"
        );
    }

    #[test]
    fn non_ascii_text_is_extractable() {
        let mut d = doc(1);
        d.header[0].1 = "Zoë Müller-Ñúñez".into();
        d.sections[0].items[0].answer = "café naïve ü ñ — Ελληνικά Привет ✓ € ±2".into();
        d.notes = vec!["Värde saknas (é)".into()];
        let r = render(&d, &opts(10_000)).unwrap();
        let Some(text) = pdftotext(&r.bytes, "unicode") else {
            return;
        };
        for needle in [
            "Zoë Müller-Ñúñez",
            "café naïve ü ñ",
            "Ελληνικά",
            "Привет",
            "✓",
            "€",
            "±2",
            "Värde saknas",
        ] {
            assert!(text.contains(needle), "{needle:?} not extracted from:\n{text}");
        }
    }

    #[test]
    fn missing_glyphs_and_control_characters_do_not_crash() {
        let mut d = doc(1);
        d.sections[0].items[0].question =
            "CJK 漢字テスト, emoji 😀, ctrl \u{0}\u{7}\u{1b}[0m, zwsp\u{200B}x".into();
        d.sections[0].items[0].answer = "line one\r\nline two\rline three\n\n\tindented\u{feff}".into();
        d.title = "Title\nwith\tbreaks".into();
        let r = render(&d, &opts(10_000)).unwrap();
        assert_eq!(r.pages, 1);
        let Some(text) = pdftotext(&r.bytes, "missing") else {
            return;
        };
        assert!(text.contains("CJK"));
        assert!(text.contains('\u{FFFD}'), "missing glyphs drawn as U+FFFD");
        assert!(text.contains("zwspx"));
        assert!(text.contains("line three"));
        assert!(text.contains("Title with breaks"));
    }

    #[test]
    fn huge_answer_is_truncated_quickly() {
        let mut d = doc(3);
        let big = "lorem ipsum dolor sit amet ".repeat(5 * 1024 * 1024 / 27 + 1);
        let total = big.chars().count();
        assert!(total >= 5 * 1024 * 1024);
        d.sections[0].items[1].answer = big;
        let started = Instant::now();
        let r = render(&d, &opts(2_000)).unwrap();
        let elapsed = started.elapsed();
        eprintln!("5 MB answer: render took {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "render took {elapsed:?}");
        assert!(
            r.pages <= 2,
            "a 2000-char answer fits on about a page, got {} pages",
            r.pages
        );
        let Some(text) = pdftotext(&r.bytes, "huge") else {
            return;
        };
        let expected = format!("[answer truncated: {total} characters, first 2000 shown]");
        assert!(
            text.replace('\n', " ").contains(&expected),
            "missing {expected:?}"
        );
        assert!(
            text.contains("Question 003:"),
            "items after the huge answer still render"
        );
    }

    #[test]
    fn truncation_edge_cases() {
        assert_eq!(cut_chars("héllo", 10), ("héllo", None));
        assert_eq!(cut_chars("héllo", 5), ("héllo", None));
        assert_eq!(cut_chars("héllo", 2), ("hé", Some(5)));
        assert_eq!(cut_chars("héllo", 0), ("", Some(5)));
        assert_eq!(cut_chars("", 0), ("", None));
        let mut d = doc(1);
        d.sections[0].items[0].answer = "abc".into();
        let r = render(&d, &opts(0)).unwrap();
        if let Some(text) = pdftotext(&r.bytes, "zero") {
            assert!(text.contains("[answer truncated: 3 characters, first 0 shown]"));
        }
    }

    #[test]
    fn empty_document_renders_one_page() {
        let r = render(&Document::default(), &opts(10_000)).unwrap();
        assert_eq!(r.pages, 1);
        let Some(text) = pdftotext(&r.bytes, "empty") else {
            return;
        };
        assert!(text.contains("Page 1 of 1"));
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let long = "x".repeat(50_000);
        let spaces = " ".repeat(10_000);
        let d = Document {
            title: long.clone(),
            header: (0..40)
                .map(|i| {
                    (
                        format!("Field {i}"),
                        if i % 2 == 0 { long.clone() } else { String::new() },
                    )
                })
                .collect(),
            sections: vec![
                Section {
                    heading: None,
                    items: vec![],
                },
                Section {
                    heading: Some(String::new()),
                    items: vec![Item::default()],
                },
                Section {
                    heading: Some(long.clone()),
                    items: vec![
                        Item {
                            label: long.clone(),
                            question: long.clone(),
                            answer: spaces.clone(),
                            score: Some(long.clone()),
                        },
                        Item {
                            label: String::new(),
                            question: "\n\n\n".into(),
                            answer: "\n".repeat(50),
                            score: Some(String::new()),
                        },
                    ],
                },
            ],
            scores: vec![(long.clone(), long.clone()), (String::new(), String::new())],
            notes: vec![long.clone(), String::new(), spaces],
            footer: long,
        };
        let r = render(&d, &opts(100)).unwrap();
        assert!(r.pages >= 1);
        let again = render(&d, &opts(100)).unwrap();
        assert_eq!(r.bytes, again.bytes);
        let letter = RenderOptions {
            page: PageSize::Letter,
            font: font(),
            max_answer_chars: 100,
        };
        assert!(render(&d, &letter).unwrap().pages >= 1);
    }

    #[test]
    fn wrap_breaks_words_and_honours_newlines() {
        let f = font();
        let geo = Geometry::new(595.276, 841.89);
        let ctx = Ctx { font: &f, geo: &geo };
        let lines = ctx.wrap("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 10.0, 50.0);
        assert!(lines.len() > 3);
        assert!(lines.iter().all(|l| f.width(l, 10.0) <= 50.0));
        assert_eq!(lines.concat(), "a".repeat(40));
        assert_eq!(
            ctx.wrap("one\ntwo\n\nthree", 10.0, 500.0),
            vec!["one", "two", "", "three"]
        );
        assert_eq!(ctx.wrap("", 10.0, 500.0), vec![String::new()]);
        let words = ctx.wrap("the quick brown fox jumps over the lazy dog", 10.0, 60.0);
        assert!(words
            .iter()
            .all(|l| f.width(l, 10.0) <= 60.0 && !l.starts_with(' ')));
        assert_eq!(words.join(" "), "the quick brown fox jumps over the lazy dog");
    }

    #[test]
    fn font_errors_are_reported() {
        let err = Font::from_bytes(b"definitely not a font".to_vec()).unwrap_err();
        assert!(matches!(err, RenderError::FontParse(_)), "{err}");
        assert!(Font::from_bytes(Vec::new()).is_err());
        let path = Path::new("/nonexistent/dir/font.ttf");
        let err = Font::load(path).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/font.ttf"), "{err}");
    }
}

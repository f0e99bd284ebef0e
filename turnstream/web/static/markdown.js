// A small, safe Markdown renderer for replies: the text becomes an HTML string in which
// every character of the source has been escaped, and the only tags are the ones written
// here. Links keep only http:, https: and mailto: targets. Nothing of the source reaches
// an attribute unescaped.
//
// Blocks: paragraphs (a single newline is a line break), ATX headings, fenced code
// (``` or ~~~, with a language class; an unclosed fence runs to the end, as while a
// reply streams), indented-free lists (-, *, +, 1. or 1), nested by indentation),
// block quotes and horizontal rules. Inline: `code`, **strong**, __strong__, *em*, _em_,
// ~~del~~, [text](url) and bare http(s) URLs.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( {0,3})([-*+]|(\d{1,9})[.)])[ \t]+(.*)$/;

export function renderMarkdown(source) {
  // NUL marks placeholders below; it has no business in a reply.
  const text = String(source).replace(/\0/g, "\uFFFD").replace(/\r\n?/g, "\n");
  return blocks(text.split("\n"));
}

function blocks(lines) {
  const out = [];
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) out.push(`<p>${paragraph.map(inline).join("<br>")}</p>`);
    paragraph = [];
  };
  for (let i = 0; i < lines.length; ) {
    const line = lines[i];
    let m;
    if (line.trim() === "") {
      flush();
      i++;
    } else if ((m = FENCE.exec(line))) {
      flush();
      i = fenced(lines, i, m, out);
    } else if ((m = HEADING.exec(line))) {
      flush();
      const level = Math.min(6, m[1].length + 2); // the page's own headings come first
      out.push(`<h${level}>${inline(m[2] || "")}</h${level}>`);
      i++;
    } else if (RULE.test(line)) {
      flush();
      out.push("<hr>");
      i++;
    } else if (QUOTE.test(line)) {
      flush();
      const quoted = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) quoted.push(lines[i].replace(QUOTE, ""));
      out.push(`<blockquote>${blocks(quoted)}</blockquote>`);
    } else if (ITEM.test(line)) {
      flush();
      i = list(lines, i, out);
    } else {
      paragraph.push(line);
      i++;
    }
  }
  flush();
  return out.join("");
}

function fenced(lines, start, match, out) {
  const [, marker, lang] = match;
  const closing = new RegExp(`^ {0,3}${marker[0] === "`" ? "`" : "~"}{${marker.length},}[ \\t]*$`);
  let i = start + 1;
  const code = [];
  for (; i < lines.length && !closing.test(lines[i]); i++) code.push(lines[i]);
  const safeLang = lang.replace(/[^\w+#.-]/g, "");
  const cls = safeLang ? ` class="language-${safeLang}"` : "";
  out.push(`<pre><code${cls}>${escapeHtml(code.join("\n"))}</code></pre>`);
  return i + 1; // past the closing fence (or the end)
}

function list(lines, start, out) {
  const first = ITEM.exec(lines[start]);
  const ordered = first[3] !== undefined;
  const indent = first[1].length;
  const items = [];
  let i = start;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || (m[3] !== undefined) !== ordered) break;
    const body = [m[4]];
    const width = m[0].length - m[4].length;
    for (i++; i < lines.length; i++) {
      const line = lines[i];
      const next = ITEM.exec(line);
      if (line.trim() === "") {
        // A blank line ends the list unless the next line still belongs to the item.
        if (i + 1 < lines.length && /^\s{2,}\S/.test(lines[i + 1])) body.push("");
        else break;
      } else if (next && next[1].length <= indent) {
        break;
      } else if (/^\s/.test(line) || !next) {
        body.push(line.replace(new RegExp(`^ {0,${width}}`), ""));
      } else {
        break;
      }
    }
    items.push(body);
    while (i < lines.length && lines[i].trim() === "" && ITEM.test(lines[i + 1] || "")) i++;
  }
  const tag = ordered ? "ol" : "ul";
  const startAttr = ordered && Number(first[3]) !== 1 ? ` start="${Number(first[3])}"` : "";
  const rendered = items.map((body) => `<li>${unwrap(blocks(body))}</li>`);
  out.push(`<${tag}${startAttr}>${rendered.join("")}</${tag}>`);
  return i;
}

// A list item of one paragraph shows without the paragraph's margins.
function unwrap(html) {
  const m = /^<p>([\s\S]*?)<\/p>(.*)$/.exec(html);
  return m && !m[1].includes("<p>") ? m[1] + m[2] : html;
}

const CODE_SPAN = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g;
const LINK = /\[([^\]\n]+)\]\(\s*([^\s)]+)(?:\s+"[^"\n]*")?\s*\)/g;
const BARE_URL = /\bhttps?:\/\/[^\s<>"'`]*[^\s<>"'`.,:;!?)\]*_~]/g;
const SAFE_URL = /^(https?:\/\/|mailto:)/i;

// One line of text to HTML. Code spans, links and URLs are set aside as placeholders
// (NUL, a number, NUL) while the rest is escaped and its emphasis marked, then put back.
export function inline(text) {
  const held = [];
  const hold = (html) => `\0${held.push(html) - 1}\0`;
  let s = text.replace(CODE_SPAN, (_, __, code) => hold(`<code>${escapeHtml(code)}</code>`));
  s = s.replace(LINK, (whole, label, href) =>
    SAFE_URL.test(href) ? hold(anchor(href, emphasis(escapeHtml(label)))) : whole,
  );
  s = s.replace(BARE_URL, (href) => hold(anchor(href, escapeHtml(href))));
  const restore = (html) => html.replace(/\0(\d+)\0/g, (_, n) => restore(held[Number(n)]));
  return restore(emphasis(escapeHtml(s)));
}

function anchor(href, label) {
  return `<a href="${escapeHtml(href)}" target="_blank" rel="noopener noreferrer">${label}</a>`;
}

function emphasis(s) {
  return s
    .replace(/\*\*(?=\S)([^*]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^\w])__(?=\S)(.*?\S)__(?!\w)/g, "$1<strong>$2</strong>")
    .replace(/(^|[^*\w])\*(?=[^\s*])([^*]*?[^\s*])\*(?![*\w])/g, "$1<em>$2</em>")
    .replace(/(^|[^\w])_(?=[^\s_])([^_]*?[^\s_])_(?!\w)/g, "$1<em>$2</em>")
    .replace(/~~(?=\S)(.*?\S)~~/g, "<del>$1</del>");
}

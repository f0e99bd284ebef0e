// A Server-Sent Events parser for fetch() bodies (docs/protocol.md, "SSE framing").
//
// Lines end in \r\n, \n or \r (the server writes \r\n; a chunk may end between the two).
// A blank line ends a frame; lines starting with ":" are comments (the `: ping` keep-alive).

export class SSEParser {
  constructor() {
    this.buffer = "";
    this.frame = { id: "", event: "", data: [] };
  }

  // The frames that `text` completes.
  feed(text) {
    this.buffer += text;
    const frames = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      if (c === "\r" && i + 1 === this.buffer.length) break; // its \n may come next
      const line = this.buffer.slice(start, i);
      if (c === "\r" && this.buffer[i + 1] === "\n") i++;
      start = i + 1;
      const frame = this.line(line);
      if (frame) frames.push(frame);
    }
    this.buffer = this.buffer.slice(start);
    return frames;
  }

  line(line) {
    if (line === "") {
      const { id, event, data } = this.frame;
      this.frame = { id: "", event: "", data: [] };
      return data.length || id || event ? { id, event, data: data.join("\n") } : null;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.frame.data.push(value);
    else if (field === "id") this.frame.id = value;
    else if (field === "event") this.frame.event = value;
    return null;
  }
}

// Every frame of a response body, as it arrives. `onBytes` is called on each chunk.
export async function* readFrames(body, onBytes) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (onBytes) onBytes();
      yield* parser.feed(decoder.decode(value, { stream: true }));
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

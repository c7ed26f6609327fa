/**
 * Runtimes `chromium-wasm` and `chromium-webgpu`: onnxruntime-web inside the system's headless
 * Chromium (Debian's `chromium`; never a downloaded browser), driven with puppeteer-core. This is
 * where a web port runs, so this is where it is judged.
 *
 * A page is served from 127.0.0.1 on a random port under a random path (WebGPU needs a secure
 * context, which loopback is; cross-origin isolation, for WASM threads, comes from the COOP / COEP
 * headers). Tensors cross as binary over that server: feeds are one buffer the page fetches,
 * outputs one buffer the page posts back, each described by a small JSON header (name, dtype,
 * dims, offset); the model and its external data are fetched by the page from registered files
 * only. The browser is started at the first load and closed by close(), and killed at process
 * exit on any other path.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import type { AddressInfo } from "node:net";
import type { Browser, Page } from "puppeteer-core";
import { HarnessError, ExitCode } from "../errors";
import { readGraph } from "../onnx/graph-outputs";
import type { DType, TypedData } from "../tensor/tensor";
import { packageVersion } from "./package-version";
import { WASM_ADDRESS_SPACE } from "./ort-wasm";
import type { IOSpec, Runtime, RuntimeDescription, RuntimeSession, RuntimeTensor, SessionSettings } from "./types";

export type ChromiumBackend = "wasm" | "webgpu";

/** Where Debian puts its Chromium, then the names it may have on PATH. */
const CANDIDATES = ["/usr/bin/chromium", "chromium", "chromium-browser"];

function findChromium(name: string): string {
  const fromEnv = process.env.SD_HARNESS_CHROMIUM;
  if (fromEnv) {
    if (!fs.existsSync(fromEnv)) throw new HarnessError(`SD_HARNESS_CHROMIUM: ${fromEnv} does not exist (runtime ${name})`, ExitCode.usage);
    return fromEnv;
  }
  for (const c of CANDIDATES) {
    if (path.isAbsolute(c)) {
      if (fs.existsSync(c)) return c;
      continue;
    }
    for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
      const p = path.join(dir, c);
      if (dir && fs.existsSync(p)) return p;
    }
  }
  throw new HarnessError(
    `--runtime ${name}: no Chromium found (${CANDIDATES.join(", ")}); install Debian's chromium (apt-get install chromium) or set SD_HARNESS_CHROMIUM`,
    ExitCode.usage,
  );
}

/**
 * Dawn toggles for the WebGPU page. `disable_workgroup_init` drops the zero-fill of workgroup
 * memory that Dawn adds to every shader using it (a loop and a barrier at the top of each
 * dispatch, and more code for SwiftShader to compile). On SwiftShader the tiny U-Net's first call
 * went from 27–36 s to 9–11 s and later calls from 7–11 s to 4.6–6 s (AMD EPYC, 2 cores, load
 * 6–12), and the outputs of both U-Nets and the VAE decoder and encoder were bit-identical with and
 * without it: the kernels they use read no workgroup memory they did not write
 * (docs/other-runtimes.md). The toggle is named in the runtime's device description.
 */
export const DAWN_TOGGLES = ["disable_workgroup_init"] as const;

/** The page: loads onnxruntime-web as an ES module and exposes load / run / release to puppeteer. */
function pageHtml(backend: ChromiumBackend, threads: number): string {
  const bundle = backend === "webgpu" ? "ort.webgpu.min.mjs" : "ort.wasm.min.mjs";
  return `<!doctype html><meta charset="utf-8"><title>sd-harness</title><script type="module">
import * as ort from "./ort/${bundle}";
ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;
if (${threads} > 0) ort.env.wasm.numThreads = ${threads};
ort.env.logLevel = "fatal";
const sessions = new Map();
let next = 1;
const BYTES = { float32: 4, float16: 2, float64: 8, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1 };
const ARRAYS = { float32: Float32Array, float16: Uint16Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array, int16: Int16Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array };
const meta = (list) => list.map((m) => ({ name: m.name, type: m.isTensor ? String(m.type) : "non-tensor", shape: m.isTensor ? Array.from(m.shape) : [] }));
async function init() {
  const info = { crossOriginIsolated: self.crossOriginIsolated, adapter: null };
  if (${JSON.stringify(backend)} === "webgpu") {
    if (!navigator.gpu) return { ...info, error: "navigator.gpu is missing (WebGPU disabled in this browser)" };
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return { ...info, error: "navigator.gpu.requestAdapter() found no adapter" };
    ort.env.webgpu.adapter = adapter;
    const a = adapter.info ?? {};
    info.adapter = { vendor: a.vendor ?? "", architecture: a.architecture ?? "", device: a.device ?? "", description: a.description ?? "" };
  }
  return info;
}
window.sdh = {
  ready: init().catch((e) => ({ error: String((e && e.message) || e) })),
  async load(modelUrl, externalData, options) {
    const s = await ort.InferenceSession.create(modelUrl, { ...options, externalData });
    const id = next++;
    sessions.set(id, s);
    return { session: id, inputs: meta(s.inputMetadata), outputs: meta(s.outputMetadata) };
  },
  async run(id, feedUrl, header, outputs, outUrl) {
    const s = sessions.get(id);
    if (!s) throw new Error("session used after release");
    const buf = await (await fetch(feedUrl)).arrayBuffer();
    const feeds = {};
    for (const f of header) feeds[f.name] = new ort.Tensor(f.dtype, new ARRAYS[f.dtype](buf, f.offset, f.length), f.dims);
    const r = outputs ? await s.run(feeds, outputs) : await s.run(feeds);
    const out = [];
    let size = 0;
    for (const [name, t] of Object.entries(r)) {
      const bytes = t.data.length * BYTES[t.type];
      out.push({ name, dtype: t.type, dims: Array.from(t.dims), offset: size, length: t.data.length, t });
      size += Math.ceil(bytes / 8) * 8;
    }
    const body = new Uint8Array(size);
    for (const o of out) body.set(new Uint8Array(o.t.data.buffer, o.t.data.byteOffset, o.length * BYTES[o.dtype]), o.offset);
    for (const o of out) o.t.dispose();
    const res = await fetch(outUrl, { method: "POST", body });
    if (!res.ok) throw new Error("posting the outputs failed: HTTP " + res.status);
    return out.map(({ t, ...o }) => o);
  },
  async release(id) {
    const s = sessions.get(id);
    sessions.delete(id);
    if (s) await s.release();
  },
};
</script>`;
}

const MIME: Record<string, string> = {
  ".mjs": "text/javascript",
  ".js": "text/javascript",
  ".wasm": "application/wasm",
  ".html": "text/html; charset=utf-8",
};

const BYTES: Record<string, number> = { float32: 4, float16: 2, float64: 8, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1 };

function view(buf: ArrayBuffer, dtype: string, offset: number, length: number): TypedData {
  switch (dtype) {
    case "float32":
      return new Float32Array(buf, offset, length);
    case "float16":
      return new Uint16Array(buf, offset, length);
    case "float64":
      return new Float64Array(buf, offset, length);
    case "int64":
      return new BigInt64Array(buf, offset, length);
    case "int32":
      return new Int32Array(buf, offset, length);
    case "int16":
      return new Int16Array(buf, offset, length);
    case "int8":
      return new Int8Array(buf, offset, length);
    case "uint8":
    case "bool":
      return new Uint8Array(buf, offset, length);
  }
  throw new Error(`output of type ${dtype} cannot cross to Node`);
}

/** The loopback server: the page, onnxruntime-web's files, registered model files, and the tensor buffers. */
class PageServer {
  readonly secret = crypto.randomBytes(12).toString("hex");
  private readonly files = new Map<string, string>();
  private readonly feeds = new Map<string, Buffer>();
  private readonly outputs = new Map<string, Buffer>();
  private readonly ortDir = path.dirname(require.resolve("onnxruntime-web"));
  private readonly server: http.Server;
  private nextId = 1;

  constructor(private readonly html: string) {
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(0, "127.0.0.1", () => resolve());
    });
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/${this.secret}/`;
  }

  registerFile(file: string): string {
    const id = `f${this.nextId++}`;
    this.files.set(id, file);
    return `file/${id}`;
  }

  putFeeds(body: Buffer): string {
    const id = `t${this.nextId++}`;
    this.feeds.set(id, body);
    return id;
  }

  takeOutputs(id: string): Buffer | undefined {
    const b = this.outputs.get(id);
    this.outputs.delete(id);
    return b;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const prefix = `/${this.secret}/`;
    const headers = {
      "Cross-Origin-Opener-Policy": "same-origin",
      "Cross-Origin-Embedder-Policy": "require-corp",
      "Cache-Control": "no-store",
    };
    const fail = (code: number) => {
      res.writeHead(code, headers);
      res.end();
    };
    if (!url.pathname.startsWith(prefix)) return fail(404);
    const rest = url.pathname.slice(prefix.length);
    if (rest === "" && req.method === "GET") {
      res.writeHead(200, { ...headers, "Content-Type": MIME[".html"] });
      res.end(this.html);
      return;
    }
    const [kind, name] = rest.split("/");
    if (kind === "ort" && req.method === "GET" && name && /^ort[\w.-]*\.(mjs|wasm)$/.test(name)) {
      const p = path.join(this.ortDir, name);
      if (!fs.existsSync(p)) return fail(404);
      res.writeHead(200, { ...headers, "Content-Type": MIME[path.extname(name)] ?? "application/octet-stream" });
      fs.createReadStream(p).pipe(res);
      return;
    }
    if (kind === "file" && req.method === "GET" && this.files.has(name)) {
      const p = this.files.get(name)!;
      res.writeHead(200, { ...headers, "Content-Type": "application/octet-stream", "Content-Length": fs.statSync(p).size });
      fs.createReadStream(p).pipe(res);
      return;
    }
    if (kind === "in" && req.method === "GET" && this.feeds.has(name)) {
      const b = this.feeds.get(name)!;
      this.feeds.delete(name);
      res.writeHead(200, { ...headers, "Content-Type": "application/octet-stream", "Content-Length": b.length });
      res.end(b);
      return;
    }
    if (kind === "out" && req.method === "POST" && /^t\d+$/.test(name)) {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        this.outputs.set(name, Buffer.concat(chunks));
        res.writeHead(204, headers);
        res.end();
      });
      return;
    }
    fail(404);
  }
}

interface Started {
  readonly browser: Browser;
  readonly page: Page;
  readonly server: PageServer;
  readonly threads: number;
  readonly adapter: { vendor: string; architecture: string; device: string; description: string } | null;
  readonly browserVersion: string;
  readonly killAtExit: () => void;
  /** the temporary folder holding the profile and Chromium's config / cache */
  readonly home: string;
}

class ChromiumSession implements RuntimeSession {
  private released = false;

  constructor(
    private readonly s: Started,
    private readonly id: number,
    readonly inputs: readonly IOSpec[],
    readonly outputs: readonly IOSpec[],
  ) {}

  async run(feeds: Readonly<Record<string, RuntimeTensor>>, outputs?: readonly string[]): Promise<Record<string, RuntimeTensor>> {
    if (this.released) throw new Error("session used after release");
    const header: { name: string; dtype: string; dims: number[]; offset: number; length: number }[] = [];
    let size = 0;
    for (const [name, t] of Object.entries(feeds)) {
      header.push({ name, dtype: t.dtype, dims: [...t.dims], offset: size, length: t.data.length });
      size += Math.ceil(t.data.byteLength / 8) * 8; // every view aligned for BigInt64Array
    }
    const body = Buffer.alloc(size);
    for (const [i, t] of Object.values(feeds).entries())
      body.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), header[i].offset);
    const token = this.s.server.putFeeds(body);
    const got = await this.s.page.evaluate(
      (id, feedUrl, h, outs, outUrl) =>
        (
          globalThis as unknown as {
            sdh: { run: (...a: unknown[]) => Promise<{ name: string; dtype: string; dims: number[]; offset: number; length: number }[]> };
          }
        ).sdh.run(id, feedUrl, h, outs, outUrl),
      this.id,
      `in/${token}`,
      header,
      outputs ? [...outputs] : null,
      `out/${token}`,
    );
    const raw = this.s.server.takeOutputs(token);
    if (!raw) throw new Error("the page's outputs did not arrive");
    // an ArrayBuffer of their own, aligned for every view
    const buf = new ArrayBuffer(raw.length);
    new Uint8Array(buf).set(raw);
    const out: Record<string, RuntimeTensor> = {};
    for (const o of got) {
      if (BYTES[o.dtype] === undefined) throw new Error(`output ${o.name} has type ${o.dtype}, which cannot cross to Node`);
      out[o.name] = { dtype: o.dtype as DType, dims: o.dims, data: view(buf, o.dtype, o.offset, o.length) };
    }
    return out;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.s.page
      .evaluate((id) => (globalThis as unknown as { sdh: { release: (id: number) => Promise<void> } }).sdh.release(id), this.id)
      .catch(() => undefined);
  }
}

export class ChromiumRuntime implements Runtime {
  readonly name: string;
  private started: Promise<Started> | null = null;
  private last: Started | null = null;

  /** `webgpuFlags: false` leaves out the flags that give headless Linux an adapter (tests use it to see the refusal) */
  constructor(
    private readonly backend: ChromiumBackend,
    private readonly options: { readonly webgpuFlags?: boolean } = {},
  ) {
    this.name = `chromium-${backend}`;
  }

  async load(file: string, settings: SessionSettings): Promise<RuntimeSession> {
    const threads = settings.threads ?? 0;
    const modelBytes = fs.statSync(file).size;
    const tooBig = (bytes: number) =>
      new HarnessError(
        `${file}: ${(bytes / 1024 ** 3).toFixed(2)} GiB with its external data, over WebAssembly's 4 GiB address space (runtime ${this.name}); run it with --runtime ort-node`,
        ExitCode.usage,
      );
    if (modelBytes >= WASM_ADDRESS_SPACE) throw tooBig(modelBytes);
    const graph = readGraph(fs.readFileSync(file), file);
    const external = [...graph.externalFiles].map((rel) => {
      const p = path.resolve(path.dirname(file), rel);
      if (!fs.existsSync(p)) throw new HarnessError(`${file}: its external weights ${rel} are missing (expected at ${p})`, ExitCode.usage);
      return { rel, file: p, size: fs.statSync(p).size };
    });
    const total = modelBytes + external.reduce((s, e) => s + e.size, 0);
    if (total >= WASM_ADDRESS_SPACE) throw tooBig(total);
    const s = await this.start(threads);
    if (s.threads !== threads) {
      throw new HarnessError(
        `threads: runtime ${this.name} already runs with ${s.threads} threads (env.wasm.numThreads is set once per page), asked for ${threads}`,
        ExitCode.usage,
      );
    }
    const options = {
      executionProviders: [this.backend],
      graphOptimizationLevel: settings.graphOptimizationLevel ?? "all",
      executionMode: "sequential",
      enableMemPattern: settings.enableMemPattern ?? true,
      enableCpuMemArena: settings.enableCpuMemArena ?? false,
      logSeverityLevel: 4,
    };
    const externalData = external.map((e) => ({ path: e.rel, data: s.server.registerFile(e.file) }));
    const r = await s.page
      .evaluate(
        (url, ext, opts) =>
          (
            globalThis as unknown as {
              sdh: { load: (...a: unknown[]) => Promise<{ session: number; inputs: IOSpec[]; outputs: IOSpec[] }> };
            }
          ).sdh.load(url, ext.length ? ext : undefined, opts),
        s.server.registerFile(file),
        externalData,
        options,
      )
      .catch((e: unknown) => {
        throw new Error(pageError(e));
      });
    return new ChromiumSession(s, r.session, r.inputs, r.outputs);
  }

  private start(threads: number): Promise<Started> {
    this.started ??= this.launch(threads).then(
      (s) => (this.last = s),
      (e: unknown) => {
        this.started = null;
        throw e;
      },
    );
    return this.started;
  }

  private async launch(threads: number): Promise<Started> {
    const executablePath = findChromium(this.name);
    const server = new PageServer(pageHtml(this.backend, threads));
    const url = await server.listen();
    const puppeteer = await import("puppeteer-core");
    const args = [
      "--headless",
      "--no-sandbox",
      "--no-first-run",
      "--disable-background-networking",
      "--no-default-browser-check",
      "--mute-audio",
    ];
    if (this.backend === "webgpu" && this.options.webgpuFlags !== false)
      args.push("--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", `--enable-dawn-features=${DAWN_TOGGLES.join(",")}`);
    // the profile and what Chromium writes under $XDG_CONFIG_HOME / $XDG_CACHE_HOME (its crash
    // database: ~/.config/chromium/Crash Reports otherwise) go to one temporary folder, removed at close
    const home = fs.mkdtempSync(path.join(os.tmpdir(), "sdh-chromium-"));
    args.push(`--user-data-dir=${path.join(home, "profile")}`, "--disable-breakpad");
    const env = { ...process.env, XDG_CONFIG_HOME: path.join(home, "config"), XDG_CACHE_HOME: path.join(home, "cache") };
    let browser: Browser;
    try {
      // our own flags only (no --disable-gpu among puppeteer's defaults)
      // no protocol timeout: one U-Net call on a software WebGPU adapter takes minutes; an interrupt closes the browser instead
      browser = await puppeteer.launch({
        executablePath,
        headless: false,
        ignoreDefaultArgs: true,
        args,
        env,
        pipe: true,
        protocolTimeout: 2 ** 31 - 1,
        handleSIGINT: false,
        handleSIGTERM: false,
        handleSIGHUP: false,
      });
    } catch (e) {
      await server.close();
      fs.rmSync(home, { recursive: true, force: true });
      throw new HarnessError(
        `--runtime ${this.name}: ${executablePath} did not start (${String((e as Error).message ?? e)
          .split("\n")[0]
          .slice(0, 200)})`,
        ExitCode.usage,
      );
    }
    const proc = browser.process();
    const killAtExit = () => {
      // the browser leads its own process group (puppeteer starts it detached): its helpers and
      // crash handler go with it, so none writes into the folder after it is removed
      try {
        if (proc?.pid) process.kill(-proc.pid, "SIGKILL");
      } catch {
        proc?.kill("SIGKILL");
      }
      fs.rmSync(home, { recursive: true, force: true });
    };
    process.once("exit", killAtExit);
    try {
      const page = await browser.newPage();
      await page.goto(url, { waitUntil: "load" });
      await page.waitForFunction(() => "sdh" in globalThis, { timeout: 60_000 });
      const ready = await page.evaluate(
        () =>
          (
            globalThis as unknown as {
              sdh: { ready: Promise<{ error?: string; adapter: Started["adapter"]; crossOriginIsolated: boolean }> };
            }
          ).sdh.ready,
      );
      if (ready.error)
        throw new HarnessError(
          `--runtime ${this.name}: ${ready.error} in ${path.basename(executablePath)} ${await browser.version()}; run WebGPU where Chromium has an adapter (a GPU, or --enable-unsafe-swiftshader's Vulkan), or use --runtime chromium-wasm`,
          ExitCode.usage,
        );
      return { browser, page, server, threads, adapter: ready.adapter, browserVersion: await browser.version(), killAtExit, home };
    } catch (e) {
      await browser.close().catch(() => proc?.kill("SIGKILL"));
      process.removeListener("exit", killAtExit);
      fs.rmSync(home, { recursive: true, force: true });
      await server.close();
      if (e instanceof HarnessError) throw e;
      throw new HarnessError(`--runtime ${this.name}: the page did not start (${pageError(e)})`, ExitCode.usage);
    }
  }

  describe(): RuntimeDescription {
    const s = this.last;
    const browser = s ? s.browserVersion : "headless Chromium";
    const a = s?.adapter;
    const device =
      this.backend === "webgpu"
        ? `${browser}, WebGPU adapter ${a ? [a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(" / ") || "(no info)" : "(not started)"}, Dawn toggles ${DAWN_TOGGLES.join(",")}`
        : `${browser}, WebAssembly (${os.cpus()[0]?.model?.trim() || "unknown CPU"})`;
    return {
      runtime: this.name,
      package: "onnxruntime-web",
      version: packageVersion("onnxruntime-web"),
      executionProvider: this.backend,
      device,
      threads: s?.threads ?? 0,
    };
  }

  async close(): Promise<void> {
    const p = this.started;
    this.started = null;
    if (!p) return;
    const s = await p.catch(() => null);
    if (!s) return;
    try {
      await s.browser.close();
    } catch {
      s.killAtExit();
    }
    process.removeListener("exit", s.killAtExit);
    fs.rmSync(s.home, { recursive: true, force: true });
    await s.server.close();
  }
}

function pageError(e: unknown): string {
  return String((e as Error)?.message ?? e)
    .split("\n")[0]
    .replace(/^Error: /, "")
    .slice(0, 240);
}

/**
 * An in-process stand-in for kube-apiserver, for testing the kube subnet manager through the real
 * @kubernetes/client-node: Node list/watch/get/patch (main resource and status subresource), Pod get, bearer-token
 * auth, and the failures a watcher has to survive (compaction -> 410 Gone, connections dropped mid-stream, an API
 * server that goes away and comes back on the same address).
 *
 * It serves on 127.0.0.1 (an ephemeral port) and is used only by unit tests, for what the real apiserver cannot be
 * made to do on demand (a connection dropped in mid-watch, a server gone at a chosen moment); every other kube test
 * runs against the real control plane (test/helpers/kube-cluster.ts; docs/testing.md says which uses which).
 *
 * Objects are kept in wire form, exactly as the real server sends them (timestamps are RFC 3339 strings). The methods
 * that hand a Node to a test convert it to client-node's V1Node, whose timestamps are Dates, so a test compares like
 * with like against what CoreV1Api returns. client-node's Watch does not convert: its callbacks get wire JSON.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { V1Node } from '@kubernetes/client-node';

export interface NodeSpecInput {
  name: string;
  podCIDR?: string;
  podCIDRs?: string[];
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  internalIP?: string;
}

export type RequestVerb = 'get' | 'list' | 'watch' | 'patch' | 'create' | 'update' | 'delete' | 'unknown';

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  contentType?: string;
  /** The RBAC verb the real API server would authorize this request as. */
  verb: RequestVerb;
  /** The RBAC resource: 'nodes', 'nodes/status', 'pods', ...; '' for paths outside /api and /apis. */
  resource: string;
  /** 0 until the response head is written (or if the connection died first). */
  status: number;
  /** A stalled request (see `stall`) whose client closed the connection: the client cancelled it. */
  cancelledByClient?: boolean;
}

export interface FakeKubeApi {
  readonly url: string;
  readonly requests: readonly RecordedRequest[];
  /** Stores a new Node and emits ADDED. Throws if the name is taken. */
  addNode(input: NodeSpecInput): V1Node;
  /** Stores `mutate`'s changes with a new resourceVersion and emits MODIFIED; a no-op mutation changes nothing. */
  updateNode(name: string, mutate: (node: V1Node) => void): V1Node;
  /** Removes the Node and emits DELETED. Throws if there is none. */
  deleteNode(name: string): void;
  node(name: string): V1Node | undefined;
  addPod(namespace: string, name: string, nodeName: string): void;
  /** The current global resourceVersion (what a list would report). */
  resourceVersion(): string;
  /** Forgets all history up to now: a watch from, or an Exact list at, an older resourceVersion gets 410 Gone. */
  compact(): void;
  /** Destroys every open watch connection abruptly: no final event, no terminating chunk. */
  dropWatches(): void;
  /** false: stop listening (new connections refused) and destroy every connection; true: listen again on the same port. */
  setAvailable(up: boolean): Promise<void>;
  openWatches(): number;
  /** The next `count` requests of this verb get no answer at all, until the client gives up and closes them. */
  stall(verb: RequestVerb, count?: number): void;
  close(): Promise<void>;
}

export interface FakeKubeApiOptions {
  /** When set, every request without `Authorization: Bearer <token>` gets 401. */
  token?: string;
  /** How often a watch with allowWatchBookmarks=true gets a BOOKMARK (default 1000 ms). */
  bookmarkIntervalMs?: number;
  /** The server-side cap on a watch's lifetime; a smaller timeoutSeconds in the query wins. */
  watchTimeoutSeconds?: number;
  /** History kept for watches; older changes are compacted away automatically (default 10000). */
  maxHistory?: number;
  /** Called as each Node LIST arrives, before it is answered (e.g. to compact between the pages of a list). */
  onList?: (query: URLSearchParams) => void;
}

type Json = null | boolean | number | string | Json[] | JsonObject;
interface JsonObject {
  [key: string]: Json;
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** One change, with the state before it, so a watch with a selector can translate it and a list can go back in time. */
interface Change {
  readonly rv: number;
  readonly type: EventType;
  readonly name: string;
  /** The new state; for DELETED the last state, stamped with the deletion's resourceVersion. */
  readonly object: JsonObject;
  readonly previous?: JsonObject;
}

interface Watcher {
  readonly res: ServerResponse;
  readonly matches: (node: JsonObject) => boolean;
  /** The resourceVersion the client has been sent everything up to. */
  sentRV: number;
  readonly timers: NodeJS.Timeout[];
}

/** An error answered as a metav1.Status. */
class StatusError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: JsonObject,
  ) {
    super(message);
  }
}

// Real clusters have revisions far from zero; starting here catches clients that treat small numbers specially.
const FIRST_RESOURCE_VERSION = 1000;
const MAX_BODY_BYTES = 3 * 1024 * 1024;
/** The one patch type the product sends (node-api.ts); a real apiserver takes more, which nothing here needs. */
const PATCH_TYPES = ['application/strategic-merge-patch+json'] as const;

export async function startFakeKubeApi(opts: FakeKubeApiOptions = {}): Promise<FakeKubeApi> {
  const api = new FakeKubeApiServer(opts);
  await api.listen();
  return api;
}

class FakeKubeApiServer implements FakeKubeApi {
  private readonly tcp: Server;
  private port = 0;
  private available = false;
  private closed = false;
  private readonly sockets = new Set<Socket>();
  private readonly watchers = new Set<Watcher>();
  private readonly log: RecordedRequest[] = [];
  private readonly records = new WeakMap<ServerResponse, RecordedRequest>();

  private rv = FIRST_RESOURCE_VERSION;
  /** Watches from, and Exact lists at, a resourceVersion below this get 410. */
  private compactedRV = FIRST_RESOURCE_VERSION;
  private history: Change[] = [];
  private readonly nodes = new Map<string, JsonObject>();
  private readonly pods = new Map<string, JsonObject>();
  private readonly stalls = new Map<RequestVerb, number>();

  constructor(private readonly opts: FakeKubeApiOptions) {
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      this.handle(req, res).catch((err: unknown) => {
        const message = err instanceof Error ? err.message : String(err);
        if (!res.headersSent) this.sendStatus(res, new StatusError(500, 'InternalError', message));
        else res.destroy();
      });
    };
    this.tcp = createServer(handler);
    this.tcp.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get requests(): readonly RecordedRequest[] {
    return this.log;
  }

  async listen(): Promise<void> {
    if (this.closed) throw new Error('fake kube API is closed');
    if (this.available) return;
    await listenOn(this.tcp, { host: '127.0.0.1', port: this.port });
    const address = this.tcp.address();
    if (address === null || typeof address === 'string') throw new Error('fake kube API: no TCP address');
    this.port = address.port;
    this.available = true;
  }

  private async stopListening(): Promise<void> {
    if (!this.available) return;
    this.available = false;
    const closing = new Promise<void>((resolve) => this.tcp.close(() => resolve()));
    this.dropWatches();
    for (const socket of this.sockets) socket.destroy();
    await closing;
  }

  async setAvailable(up: boolean): Promise<void> {
    if (up) await this.listen();
    else await this.stopListening();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.stopListening();
    this.closed = true;
  }

  openWatches(): number {
    return this.watchers.size;
  }

  stall(verb: RequestVerb, count = 1): void {
    this.stalls.set(verb, (this.stalls.get(verb) ?? 0) + count);
  }

  dropWatches(): void {
    for (const watcher of [...this.watchers]) {
      this.forgetWatcher(watcher);
      watcher.res.destroy();
    }
  }

  resourceVersion(): string {
    return String(this.rv);
  }

  compact(): void {
    this.compactedRV = this.rv;
    this.history = [];
  }

  // ---- state changes made by the test ------------------------------------------------------------------------------

  addNode(input: NodeSpecInput): V1Node {
    if (input.name === '') throw new Error('addNode: a node needs a name');
    if (this.nodes.has(input.name)) throw new Error(`addNode: node ${input.name} exists`);
    const node = newNode(input, this.rv + 1);
    this.commit('ADDED', input.name, node);
    return toClientNode(node);
  }

  updateNode(name: string, mutate: (node: V1Node) => void): V1Node {
    const old = this.nodes.get(name);
    if (old === undefined) throw new Error(`updateNode: no node ${name}`);
    const draft = toClientNode(old);
    mutate(draft);
    const next = fromClientNode(draft);
    const meta = metadataOf(next);
    if (meta.name !== name) throw new Error(`updateNode: the name of node ${name} cannot change`);
    keepServerFields(meta, metadataOf(old));
    if (deepEqual(next, old)) return toClientNode(old);
    this.commit('MODIFIED', name, next);
    return toClientNode(next);
  }

  deleteNode(name: string): void {
    if (!this.nodes.has(name)) throw new Error(`deleteNode: no node ${name}`);
    this.commit('DELETED', name, undefined);
  }

  node(name: string): V1Node | undefined {
    const node = this.nodes.get(name);
    return node === undefined ? undefined : toClientNode(node);
  }

  addPod(namespace: string, name: string, nodeName: string): void {
    const key = `${namespace}/${name}`;
    if (this.pods.has(key)) throw new Error(`addPod: pod ${key} exists`);
    // Pods share the global revision counter with nodes, as every object shares etcd's revision.
    this.rv += 1;
    this.pods.set(key, newPod(namespace, name, nodeName, this.rv));
  }

  /** The one place nodes change: bumps the revision, records history, feeds open watches. */
  private commit(type: EventType, name: string, next: JsonObject | undefined): void {
    const previous = this.nodes.get(name);
    this.rv += 1;
    const stored = next ?? previous;
    if (stored === undefined) throw new Error(`commit: no node ${name}`);
    const object = clone(stored);
    metadataOf(object).resourceVersion = String(this.rv);
    if (next === undefined) this.nodes.delete(name);
    else this.nodes.set(name, clone(object));
    const change: Change = previous === undefined ? { rv: this.rv, type, name, object } : { rv: this.rv, type, name, object, previous };
    this.history.push(change);
    const max = this.opts.maxHistory ?? 10_000;
    if (this.history.length > max) {
      const dropped = this.history.splice(0, this.history.length - max);
      this.compactedRV = dropped[dropped.length - 1]!.rv;
    }
    for (const watcher of [...this.watchers]) this.deliver(watcher, change);
  }

  // ---- HTTP ---------------------------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake-kube-api');
    const route = classify(req.method ?? 'GET', url.pathname, url.searchParams);
    const record: RecordedRequest = {
      method: req.method ?? '',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      verb: route.verb,
      resource: route.resource,
      status: 0,
    };
    const contentType = req.headers['content-type'];
    if (contentType !== undefined) record.contentType = contentType;
    this.log.push(record);
    this.records.set(res, record);
    const stalled = this.stalls.get(route.verb) ?? 0;
    if (stalled > 0) {
      this.stalls.set(route.verb, stalled - 1);
      res.once('close', () => {
        if (!this.closed && this.available) record.cancelledByClient = true;
      });
      return;
    }

    try {
      if (this.opts.token !== undefined && req.headers.authorization !== `Bearer ${this.opts.token}`) {
        throw new StatusError(401, 'Unauthorized', 'Unauthorized');
      }
      await this.route(req, res, route, url.searchParams);
    } catch (err) {
      if (!(err instanceof StatusError)) throw err;
      this.sendStatus(res, err);
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, route: Route, query: URLSearchParams): Promise<void> {
    const method = req.method ?? 'GET';
    if (route.group === 'core' && route.namespace === undefined && route.type === 'nodes') {
      if (route.name === undefined && route.subresource === undefined) {
        if (method !== 'GET') throw methodNotAllowed();
        if (route.verb === 'watch') return this.watchNodes(res, query, undefined);
        return this.sendJson(res, 200, this.listNodes(query));
      }
      if (route.name !== undefined && (route.subresource === undefined || route.subresource === 'status')) {
        if (method === 'GET') {
          if (route.verb === 'watch' && route.subresource === undefined) return this.watchNodes(res, query, route.name);
          return this.sendJson(res, 200, this.getNode(route.name));
        }
        if (method === 'PATCH') {
          const body = await readBody(req);
          return this.sendJson(res, 200, this.patchNode(route.name, route.subresource === 'status', req.headers['content-type'], body, query));
        }
        throw methodNotAllowed();
      }
    }
    if (route.group === 'core' && route.namespace !== undefined && route.type === 'pods' && route.name !== undefined && route.subresource === undefined) {
      if (method !== 'GET' || route.verb === 'watch') throw methodNotAllowed();
      const pod = this.pods.get(`${route.namespace}/${route.name}`);
      if (pod === undefined) throw notFound('pods', route.name);
      return this.sendJson(res, 200, pod);
    }
    throw new StatusError(404, 'NotFound', 'the server could not find the requested resource', {
      causes: [{ reason: 'UnexpectedServerResponse', message: '404 page not found' }],
    });
  }

  private sendStatus(res: ServerResponse, err: StatusError): void {
    const body: JsonObject = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: err.message, reason: err.reason };
    if (err.details !== undefined) body.details = err.details;
    body.code = err.code;
    this.sendJson(res, err.code, body);
  }

  /** Every response head goes out here, so the request log sees a watch's status long before the watch ends. */
  private writeHead(res: ServerResponse, status: number, headers: Record<string, string | number>): void {
    const record = this.records.get(res);
    if (record !== undefined) record.status = status;
    res.writeHead(status, headers);
  }

  private sendJson(res: ServerResponse, status: number, body: JsonObject): void {
    const text = JSON.stringify(body);
    this.writeHead(res, status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private getNode(name: string): JsonObject {
    const node = this.nodes.get(name);
    if (node === undefined) throw notFound('nodes', name);
    return node;
  }

  // ---- list ---------------------------------------------------------------------------------------------------------

  private listNodes(query: URLSearchParams): JsonObject {
    this.opts.onList?.(query);
    const matches = parseSelectors(query, undefined);
    const rvParam = query.get('resourceVersion') ?? '';
    const match = query.get('resourceVersionMatch') ?? '';
    if (match !== '' && match !== 'NotOlderThan' && match !== 'Exact') {
      throw invalid(`resourceVersionMatch: Unsupported value: "${match}": supported values: "Exact", "NotOlderThan"`);
    }
    if (match !== '' && rvParam === '') throw invalid('resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided');
    if (match === 'Exact' && rvParam === '0') throw invalid('resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"');

    let nodes: ReadonlyMap<string, JsonObject> = this.nodes;
    let listRV = this.rv;
    if (rvParam !== '' && rvParam !== '0') {
      const wanted = parseResourceVersion(rvParam);
      // The real server waits ~3 s for its cache to catch up before giving up; nothing here will ever catch up.
      if (wanted > this.rv) {
        throw new StatusError(504, 'Timeout', `Too large resource version: ${wanted}, current: ${this.rv}`, {
          causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
          retryAfterSeconds: 1,
        });
      }
      // Without Exact the answer only has to be "not older than" the request, so history does not matter.
      if (match === 'Exact') {
        if (wanted < this.compactedRV) throw new StatusError(410, 'Expired', 'The resourceVersion for the provided list is too old.');
        nodes = this.nodesAt(wanted);
        listRV = wanted;
      }
    }
    // A continue token pins the list to its first page's snapshot, as the real server does, until compaction.
    const token = query.get('continue') ?? '';
    let after = '';
    if (token !== '') {
      const pinned = parseContinue(token);
      if (pinned.rv < this.compactedRV) {
        throw new StatusError(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
      }
      nodes = this.nodesAt(pinned.rv);
      listRV = pinned.rv;
      after = pinned.after;
    }
    const limit = Number(query.get('limit') ?? '0');
    const items: JsonObject[] = [];
    const names = [...nodes.keys()].sort().filter((n) => n > after);
    let rest = 0;
    for (const name of names) {
      const node = nodes.get(name)!;
      if (!matches(node)) continue;
      if (limit > 0 && items.length >= limit) {
        rest++;
        continue;
      }
      // The real server strips kind and apiVersion from list items.
      const { kind: _kind, apiVersion: _apiVersion, ...item } = node;
      items.push(clone(item));
    }
    const metadata: JsonObject = { resourceVersion: String(listRV) };
    if (rest > 0) {
      const last = metadataOf(items[items.length - 1]!).name as string;
      metadata.continue = Buffer.from(JSON.stringify({ rv: listRV, after: last })).toString('base64url');
      metadata.remainingItemCount = rest;
    }
    return { kind: 'NodeList', apiVersion: 'v1', metadata, items };
  }

  /** The node set as it was at `rv`, rebuilt by undoing later changes. */
  private nodesAt(rv: number): Map<string, JsonObject> {
    const state = new Map(this.nodes);
    for (let i = this.history.length - 1; i >= 0; i--) {
      const change = this.history[i]!;
      if (change.rv <= rv) break;
      if (change.previous === undefined) state.delete(change.name);
      else state.set(change.name, change.previous);
    }
    return state;
  }

  // ---- watch --------------------------------------------------------------------------------------------------------

  private watchNodes(res: ServerResponse, query: URLSearchParams, name: string | undefined): void {
    const matches = parseSelectors(query, name);
    const rvParam = query.get('resourceVersion') ?? '';
    const since = rvParam === '' || rvParam === '0' ? undefined : parseResourceVersion(rvParam);
    const timeouts = [parseTimeoutSeconds(query.get('timeoutSeconds')), this.opts.watchTimeoutSeconds].filter(
      (s): s is number => s !== undefined && s > 0,
    );
    const bookmarks = isTrue(query.get('allowWatchBookmarks'));

    this.writeHead(res, 200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();

    // The real server answers 200 and then reports an expired resourceVersion as an ERROR event.
    if (since !== undefined && since < this.compactedRV) {
      writeEvent(res, 'ERROR', {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `too old resource version: ${since} (${this.compactedRV})`,
        reason: 'Expired',
        code: 410,
      });
      res.end();
      return;
    }

    const watcher: Watcher = { res, matches, sentRV: since ?? this.rv, timers: [] };
    if (since === undefined) {
      // "Get state and start at most recent": a synthetic ADDED for everything that exists now.
      for (const nodeName of [...this.nodes.keys()].sort()) {
        const node = this.nodes.get(nodeName)!;
        if (matches(node)) writeEvent(res, 'ADDED', node);
      }
    } else {
      for (const change of this.history) if (change.rv > since) this.deliver(watcher, change);
    }
    this.watchers.add(watcher);

    if (bookmarks) {
      const interval = setInterval(() => {
        const rv = Math.max(watcher.sentRV, this.rv);
        writeEvent(res, 'BOOKMARK', { kind: 'Node', apiVersion: 'v1', metadata: { resourceVersion: String(rv) } });
      }, this.opts.bookmarkIntervalMs ?? 1000);
      interval.unref();
      watcher.timers.push(interval);
    }
    if (timeouts.length > 0) {
      const timer = setTimeout(() => {
        this.forgetWatcher(watcher);
        res.end();
      }, Math.min(...timeouts) * 1000);
      timer.unref();
      watcher.timers.push(timer);
    }
    res.on('close', () => this.forgetWatcher(watcher));
  }

  private forgetWatcher(watcher: Watcher): void {
    for (const timer of watcher.timers) clearTimeout(timer);
    this.watchers.delete(watcher);
  }

  /** Sends one change as the watcher's selectors see it: an object moving out of view is DELETED for it. */
  private deliver(watcher: Watcher, change: Change): void {
    // Also keeps a watch from a resourceVersion ahead of the store from seeing changes it asked to skip.
    if (change.rv <= watcher.sentRV) return;
    watcher.sentRV = change.rv;
    const was = change.previous !== undefined && watcher.matches(change.previous);
    const is = change.type !== 'DELETED' && watcher.matches(change.object);
    if (change.type === 'DELETED') {
      if (was) writeEvent(watcher.res, 'DELETED', change.object);
    } else if (is) {
      writeEvent(watcher.res, was ? change.type : 'ADDED', change.object);
    } else if (was) {
      writeEvent(watcher.res, 'DELETED', change.object);
    }
  }

  // ---- patch --------------------------------------------------------------------------------------------------------

  private patchNode(name: string, statusSubresource: boolean, contentType: string | undefined, body: string, query: URLSearchParams): JsonObject {
    const old = this.getNode(name);
    const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
    if (!(PATCH_TYPES as readonly string[]).includes(type)) {
      throw new StatusError(
        415,
        'UnsupportedMediaType',
        `the body of the request was in an unknown format - accepted media types include: ${PATCH_TYPES.join(', ')}`,
      );
    }
    let patch: Json;
    try {
      patch = JSON.parse(body) as Json;
    } catch (err) {
      throw badRequest(`error decoding patch: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (!isObject(patch)) throw badRequest('a strategic merge patch must be a JSON object');
    const patched = strategicMerge(old, patch, '') ?? {};
    const next = settlePatchedNode(old, patched, statusSubresource);
    if (deepEqual(next, old)) return old;
    if (query.get('dryRun') === 'All') return next;
    this.commit('MODIFIED', name, next);
    return this.nodes.get(name)!;
  }
}

// ---- routing ---------------------------------------------------------------------------------------------------------

interface Route {
  readonly verb: RequestVerb;
  /** RBAC resource, e.g. 'nodes/status'. */
  readonly resource: string;
  /** 'core' for /api/v1, the API group for /apis/<group>/<version>, '' otherwise. */
  readonly group: string;
  readonly type?: string;
  readonly namespace?: string;
  readonly name?: string;
  readonly subresource?: string;
}

function classify(method: string, pathname: string, query: URLSearchParams): Route {
  const segments = pathname.split('/').filter((s) => s !== '').map(decodeSegment);
  let group = '';
  let rest: string[] = [];
  if (segments[0] === 'api' && segments[1] === 'v1') {
    group = 'core';
    rest = segments.slice(2);
  } else if (segments[0] === 'apis' && segments.length >= 3) {
    group = segments[1]!;
    rest = segments.slice(3);
  }
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    namespace = rest[1]!;
    rest = rest.slice(2);
  }
  const watch = isTrue(query.get('watch'));
  const [type, name, subresource] = rest;
  const verb = verbOf(method, name !== undefined, watch);
  if (type === undefined || rest.length > 3) return { verb, resource: '', group: '' };
  const route: { -readonly [K in keyof Route]: Route[K] } = {
    verb,
    resource: subresource === undefined ? type : `${type}/${subresource}`,
    group,
    type,
  };
  if (namespace !== undefined) route.namespace = namespace;
  if (name !== undefined) route.name = name;
  if (subresource !== undefined) route.subresource = subresource;
  return route;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function verbOf(method: string, named: boolean, watch: boolean): RequestVerb {
  switch (method) {
    case 'GET':
      if (watch) return 'watch';
      return named ? 'get' : 'list';
    case 'POST':
      return 'create';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return 'delete';
    default:
      return 'unknown';
  }
}

/** The API server parses boolean query parameters with Go's strconv.ParseBool. */
function isTrue(value: string | null): boolean {
  return value !== null && ['1', 't', 'T', 'true', 'TRUE', 'True'].includes(value);
}

function parseContinue(token: string): { rv: number; after: string } {
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString()) as { rv?: unknown; after?: unknown };
    if (typeof parsed.rv === 'number' && typeof parsed.after === 'string') return { rv: parsed.rv, after: parsed.after };
  } catch {
    // fall through
  }
  throw invalid('continue key is not valid');
}

function parseResourceVersion(text: string): number {
  if (!/^\d{1,15}$/.test(text)) throw badRequest(`invalid resource version: ${JSON.stringify(text)}`);
  return Number(text);
}

function parseTimeoutSeconds(text: string | null): number | undefined {
  if (text === null || text === '') return undefined;
  if (!/^\d{1,9}$/.test(text)) throw badRequest(`timeoutSeconds: invalid value ${JSON.stringify(text)}`);
  return Number(text);
}

/**
 * The selectors a node list or watch may carry: fieldSelector metadata.name (=, ==, !=) and equality-based
 * labelSelector terms (k=v, k==v, k!=v, k, !k). Anything else is refused rather than silently ignored.
 */
function parseSelectors(query: URLSearchParams, namedInPath: string | undefined): (node: JsonObject) => boolean {
  const tests: ((node: JsonObject) => boolean)[] = [];
  if (namedInPath !== undefined) tests.push((node) => metadataOf(node).name === namedInPath);
  for (const term of splitTerms(query.get('fieldSelector'))) {
    const m = /^([^!=]+)(==|=|!=)(.*)$/.exec(term);
    if (!m || m[1]!.trim() !== 'metadata.name') throw badRequest(`field label not supported by the fake kube API: ${term}`);
    const value = m[3]!.trim();
    const equal = m[2] !== '!=';
    tests.push((node) => (metadataOf(node).name === value) === equal);
  }
  for (const term of splitTerms(query.get('labelSelector'))) {
    const m = /^(!?)([A-Za-z0-9._/-]+)(?:(==|=|!=)([A-Za-z0-9._-]*))?$/.exec(term);
    if (!m || (m[1] === '!' && m[3] !== undefined)) throw badRequest(`label selector not supported by the fake kube API: ${term}`);
    const key = m[2]!;
    const op = m[3];
    const value = m[4] ?? '';
    tests.push((node) => {
      const labels = metadataOf(node).labels;
      const actual = isObject(labels) ? labels[key] : undefined;
      if (op === undefined) return (actual !== undefined) !== (m[1] === '!');
      return op === '!=' ? actual !== value : actual === value;
    });
  }
  return (node) => tests.every((test) => test(node));
}

function splitTerms(selector: string | null): string[] {
  if (selector === null) return [];
  return selector
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '');
}

// ---- HTTP plumbing ---------------------------------------------------------------------------------------------------

function listenOn(server: Server, where: { host: string; port: number } | { path: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(where, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function writeEvent(res: ServerResponse, type: string, object: JsonObject): void {
  if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify({ type, object })}\n`);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  // Keeps reading past the limit (discarding) so the connection stays usable for the 413 answer.
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size <= MAX_BODY_BYTES) chunks.push(chunk);
  }
  if (size > MAX_BODY_BYTES) throw new StatusError(413, 'RequestEntityTooLarge', `Request entity too large: limit is ${MAX_BODY_BYTES}`);
  return Buffer.concat(chunks).toString('utf8');
}

function notFound(resource: string, name: string): StatusError {
  return new StatusError(404, 'NotFound', `${resource} "${name}" not found`, { name, kind: resource });
}

function badRequest(message: string): StatusError {
  return new StatusError(400, 'BadRequest', message);
}

function invalid(message: string): StatusError {
  return new StatusError(422, 'Invalid', message);
}

function methodNotAllowed(): StatusError {
  return new StatusError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
}

// ---- objects ---------------------------------------------------------------------------------------------------------

/** metav1.Time has second precision and is written in UTC with a Z. */
function rfc3339(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function newNode(input: NodeSpecInput, rv: number): JsonObject {
  const now = rfc3339(new Date());
  const podCIDRs = input.podCIDRs ?? (input.podCIDR !== undefined ? [input.podCIDR] : []);
  const podCIDR = input.podCIDR ?? podCIDRs[0];
  const spec: JsonObject = {};
  if (podCIDR !== undefined) spec.podCIDR = podCIDR;
  if (podCIDRs.length > 0) spec.podCIDRs = [...podCIDRs];
  const condition = (type: string, status: string, reason: string, message: string): JsonObject => ({
    type, status, lastHeartbeatTime: now, lastTransitionTime: now, reason, message,
  });
  const addresses: JsonObject[] = [];
  if (input.internalIP !== undefined) addresses.push({ type: 'InternalIP', address: input.internalIP });
  addresses.push({ type: 'Hostname', address: input.name });
  const resources: JsonObject = { cpu: '2', 'ephemeral-storage': '20134592Ki', 'hugepages-2Mi': '0', memory: '4015424Ki', pods: '110' };
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: input.name,
      uid: randomUUID(),
      resourceVersion: String(rv),
      creationTimestamp: now,
      labels: {
        'beta.kubernetes.io/arch': 'amd64',
        'beta.kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'kubernetes.io/hostname': input.name,
        'kubernetes.io/os': 'linux',
        ...input.labels,
      },
      // What the kubelet and the attach-detach controller put on every real node.
      annotations: {
        'node.alpha.kubernetes.io/ttl': '0',
        'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
        ...input.annotations,
      },
    },
    spec,
    status: {
      capacity: resources,
      allocatable: clone(resources),
      conditions: [
        condition('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'),
        condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
        condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
        condition('Ready', 'True', 'KubeletReady', 'kubelet is posting ready status'),
      ],
      addresses,
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: {
        machineID: randomBytes(16).toString('hex'),
        systemUUID: randomUUID(),
        bootID: randomUUID(),
        kernelVersion: '6.1.0-28-amd64',
        osImage: 'Debian GNU/Linux 12 (bookworm)',
        containerRuntimeVersion: 'containerd://1.7.24',
        kubeletVersion: 'v1.31.4',
        kubeProxyVersion: 'v1.31.4',
        operatingSystem: 'linux',
        architecture: 'amd64',
      },
    },
  };
}

function newPod(namespace: string, name: string, nodeName: string, rv: number): JsonObject {
  const now = rfc3339(new Date());
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, uid: randomUUID(), resourceVersion: String(rv), creationTimestamp: now },
    spec: { nodeName, containers: [{ name: 'main', image: 'registry.k8s.io/pause:3.10' }] },
    status: { phase: 'Running', startTime: now },
  };
}

/** The timestamp fields of a Node that client-node types as Date. */
function mapNodeTimes(node: JsonObject, convert: (value: unknown) => unknown): unknown {
  const out = clone(node) as Record<string, unknown>;
  const fix = (holder: unknown, key: string): void => {
    if (typeof holder === 'object' && holder !== null && key in holder) {
      const h = holder as Record<string, unknown>;
      h[key] = convert(h[key]);
    }
  };
  const each = (list: unknown, key: string): void => {
    if (Array.isArray(list)) for (const item of list) fix(item, key);
  };
  const meta = out.metadata as Record<string, unknown> | undefined;
  fix(meta, 'creationTimestamp');
  fix(meta, 'deletionTimestamp');
  each(meta?.managedFields, 'time');
  each((out.spec as Record<string, unknown> | undefined)?.taints, 'timeAdded');
  const conditions = (out.status as Record<string, unknown> | undefined)?.conditions;
  each(conditions, 'lastHeartbeatTime');
  each(conditions, 'lastTransitionTime');
  return out;
}

function toClientNode(node: JsonObject): V1Node {
  return mapNodeTimes(node, (v) => (typeof v === 'string' ? new Date(v) : v)) as V1Node;
}

function fromClientNode(node: V1Node): JsonObject {
  const text = JSON.stringify(node, function (this: Record<string, unknown>, key: string, value: unknown) {
    const raw = this[key];
    return raw instanceof Date ? rfc3339(raw) : value;
  });
  const parsed = JSON.parse(text) as Json;
  if (!isObject(parsed)) throw new Error('updateNode: the node must stay an object');
  return parsed;
}

// ---- JSON helpers ----------------------------------------------------------------------------------------------------

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function clone<T extends Json>(value: T): T {
  return structuredClone(value);
}

function deepEqual(a: Json | undefined, b: Json | undefined): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  if (isObject(a) && isObject(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => k in b && deepEqual(a[k], b[k]));
  }
  return false;
}

function metadataOf(object: JsonObject): JsonObject {
  const meta = object.metadata;
  if (isObject(meta)) return meta;
  const fresh: JsonObject = {};
  object.metadata = fresh;
  return fresh;
}

// ---- patches ---------------------------------------------------------------------------------------------------------


/**
 * What the registry does with a patched Node before storing it: server-owned metadata is kept, a resourceVersion or
 * uid in the patch is a precondition, and each endpoint only changes its half (the main resource ignores status; the
 * status subresource ignores spec but does apply metadata, which upstream flannel relies on for its annotations).
 */
function settlePatchedNode(old: JsonObject, patched: Json, statusSubresource: boolean): JsonObject {
  if (!isObject(patched)) throw invalid('the patched object is not a JSON object');
  const next = clone(patched);
  const meta = next.metadata;
  if (!isObject(meta)) throw invalid('metadata: Required value');
  const oldMeta = metadataOf(old);
  const name = String(oldMeta.name);
  if (meta.name !== oldMeta.name) {
    throw badRequest(`the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`);
  }
  const conflict = (why: string): StatusError =>
    new StatusError(409, 'Conflict', `Operation cannot be fulfilled on nodes "${name}": ${why}`, { name, kind: 'nodes' });
  if (meta.resourceVersion !== undefined && meta.resourceVersion !== oldMeta.resourceVersion) {
    throw conflict('the object has been modified; please apply your changes to the latest version and try again');
  }
  if (meta.uid !== undefined && meta.uid !== oldMeta.uid) {
    throw conflict(`Precondition failed: UID in precondition: ${String(meta.uid)}, UID in object meta: ${String(oldMeta.uid)}`);
  }
  for (const field of ['labels', 'annotations']) {
    const map = meta[field];
    if (map === undefined) continue;
    if (!isObject(map) || !Object.values(map).every((v) => typeof v === 'string')) {
      throw invalid(`metadata.${field}: Invalid value: must be a map of strings`);
    }
  }
  keepServerFields(meta, oldMeta);
  next.kind = 'Node';
  next.apiVersion = 'v1';
  const keep = statusSubresource ? 'spec' : 'status';
  const kept = old[keep];
  if (kept === undefined) delete next[keep];
  else next[keep] = clone(kept);
  return next;
}

function keepServerFields(meta: JsonObject, oldMeta: JsonObject): void {
  for (const field of ['uid', 'resourceVersion', 'creationTimestamp']) {
    const value = oldMeta[field];
    if (value === undefined) delete meta[field];
    else meta[field] = value;
  }
}


type ListStrategy = { readonly kind: 'keyed'; readonly key: string } | { readonly kind: 'set' };

/** The Node fields whose struct tags say patchStrategy=merge; every other list is replaced by a strategic merge patch. */
const NODE_LIST_STRATEGIES: ReadonlyMap<string, ListStrategy> = new Map<string, ListStrategy>([
  ['metadata.finalizers', { kind: 'set' }],
  ['metadata.ownerReferences', { kind: 'keyed', key: 'uid' }],
  ['spec.podCIDRs', { kind: 'set' }],
  ['status.conditions', { kind: 'keyed', key: 'type' }],
  ['status.addresses', { kind: 'keyed', key: 'type' }],
]);

const DELETE_FROM_PRIMITIVE_LIST = '$deleteFromPrimitiveList/';

/** A strategic merge patch of a map; undefined means "remove this field" ($patch: delete). */
function strategicMerge(original: Json | undefined, patch: JsonObject, path: string): JsonObject | undefined {
  const directive = patch.$patch;
  if (directive === 'delete') return undefined;
  if (directive !== undefined && directive !== 'replace' && directive !== 'merge') {
    throw badRequest(`unknown patch type: ${JSON.stringify(directive)} in map patch`);
  }
  const result: JsonObject = directive === 'replace' || !isObject(original) ? {} : clone(original);
  const retain = patch.$retainKeys;
  if (Array.isArray(retain)) {
    for (const key of Object.keys(result)) if (!retain.includes(key)) delete result[key];
  }
  for (const [key, value] of Object.entries(patch)) {
    if (key === '$patch' || key === '$retainKeys' || key.startsWith('$setElementOrder/') || key.startsWith(DELETE_FROM_PRIMITIVE_LIST)) continue;
    if (key.startsWith('$')) throw badRequest(`unknown strategic merge patch directive: ${key}`);
    const childPath = path === '' ? key : `${path}.${key}`;
    if (value === null) {
      delete result[key];
    } else if (isObject(value)) {
      const merged = strategicMerge(result[key], value, childPath);
      if (merged === undefined) delete result[key];
      else result[key] = merged;
    } else if (Array.isArray(value)) {
      result[key] = strategicMergeList(result[key], value, childPath);
    } else {
      result[key] = value;
    }
  }
  for (const [key, value] of Object.entries(patch)) {
    if (!key.startsWith(DELETE_FROM_PRIMITIVE_LIST)) continue;
    const field = key.slice(DELETE_FROM_PRIMITIVE_LIST.length);
    const list = result[field];
    if (!Array.isArray(value)) throw badRequest(`${key} must be a list`);
    if (Array.isArray(list)) result[field] = list.filter((item) => !value.some((v) => deepEqual(v, item)));
  }
  return result;
}

function strategicMergeList(original: Json | undefined, patch: Json[], path: string): Json[] {
  const replace = patch.some((item) => isObject(item) && item.$patch === 'replace');
  const items = patch.filter((item) => !(isObject(item) && item.$patch === 'replace'));
  const strategy = NODE_LIST_STRATEGIES.get(path);
  if (strategy === undefined || replace || !Array.isArray(original)) {
    return items.filter((item) => !(isObject(item) && item.$patch === 'delete')).map((item) => clone(item));
  }
  const result = clone(original);
  if (strategy.kind === 'set') {
    for (const item of items) if (!result.some((have) => deepEqual(have, item))) result.push(clone(item));
    return result;
  }
  for (const item of items) {
    if (!isObject(item)) throw badRequest(`${path}: a list with merge key ${strategy.key} can only hold maps`);
    const keyValue = item[strategy.key];
    if (keyValue === undefined) throw badRequest(`${path}: map ${JSON.stringify(item)} does not contain declared merge key: ${strategy.key}`);
    const index = result.findIndex((have) => isObject(have) && deepEqual(have[strategy.key], keyValue));
    if (item.$patch === 'delete') {
      for (let i = result.length - 1; i >= 0; i--) {
        const have = result[i];
        if (isObject(have) && deepEqual(have[strategy.key], keyValue)) result.splice(i, 1);
      }
      continue;
    }
    const merged = strategicMerge(index >= 0 ? result[index] : undefined, item, `${path}[]`);
    if (index >= 0) {
      if (merged === undefined) result.splice(index, 1);
      else result[index] = merged;
    } else if (merged !== undefined) {
      result.push(merged);
    }
  }
  return result;
}


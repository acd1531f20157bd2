/**
 * The routes of `strata serve`: the Storage interface over HTTP, so a client
 * can keep a repository on the server without the server holding any key.
 * docs/openapi.yaml describes the same table (a test keeps them in step).
 *
 * Objects are write-once: PUT creates an object or confirms that the same
 * bytes are already there (so a retried upload succeeds), and refuses other
 * bytes with 409. That holds for config and keys too, so the append role can
 * create a repository on an empty server but cannot replace its config or a
 * key; only DELETE (admin) removes anything. The append role adds a key file
 * only to a repository without one (init); further key files need admin.
 */
import { pipeline } from 'node:stream/promises';
import { Readable, Transform } from 'node:stream';
import { LocalStorage } from '../storage/local.js';
import type { Handle, Kind, Storage } from '../storage/storage.js';
import { HttpError, sendJson, type RequestContext, type Route } from './http.js';
import { parseRange } from './range.js';
import { CatalogKeeper, catalogRoutes } from './catalog-routes.js';
import { VERSION } from '../version.js';

/** Bodies: a pack is at most 1 GiB plus what its last blob adds; config, keys and dictionaries are small. */
export const MAX_PACK_BYTES = 2 * 1024 * 1024 * 1024;
export const MAX_SMALL_BYTES = 64 * 1024;

const NAMES: Record<Kind, RegExp> = {
  config: /^config$/,
  key: /^[0-9a-f]{16,64}$/,
  pack: /^[0-9a-f]{64}$/,
  dict: /^[0-9a-f]{16}$/,
};

function kindOf(param: string): Kind {
  if (param === 'config' || param === 'key' || param === 'pack' || param === 'dict') return param;
  throw new HttpError('no_kind', 'no such object kind (config, key, pack or dict)');
}

function handleOf(ctx: RequestContext): Handle {
  const kind = kindOf(ctx.params.kind!);
  const name = ctx.params.name!;
  if (!NAMES[kind].test(name)) throw new HttpError('bad_name', `invalid ${kind} name`);
  return { kind, name };
}

export function objectRoutes(storage: Storage): Route[] {
  const getObject = async (ctx: RequestContext) => {
    const h = handleOf(ctx);
    const st = await storage.stat(h);
    const range = parseRange(ctx.req.headers.range, st.size);
    const headers: Record<string, string> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      'Last-Modified': new Date(st.mtimeMs).toUTCString(),
    };
    if (range.kind === 'unsatisfiable') {
      throw new HttpError('range_not_satisfiable', range.reason, { 'Content-Range': `bytes */${st.size}` });
    }
    const [start, end] = range.kind === 'range' ? [range.start, range.end] : [0, st.size - 1];
    const length = end - start + 1;
    if (range.kind === 'range') headers['Content-Range'] = `bytes ${start}-${end}/${st.size}`;
    headers['Content-Length'] = String(length);
    ctx.res.writeHead(range.kind === 'range' ? 206 : 200, headers);
    if (ctx.req.method === 'HEAD' || length === 0) {
      ctx.res.end();
      return;
    }
    const count = new Transform({
      transform(chunk: Buffer, _enc, done) {
        ctx.bytesOut += chunk.length;
        done(null, chunk);
      },
    });
    await pipeline(Readable.from(storage.stream(h, start, end)), count, ctx.res);
  };

  return [
    {
      method: 'GET',
      path: '/v1/health',
      role: null,
      maxBody: 0,
      handle: async (ctx) => sendJson(ctx, 200, { ok: true, version: VERSION }),
    },
    {
      method: 'GET',
      path: '/v1/objects/{kind}',
      role: 'read',
      maxBody: 0,
      handle: async (ctx) => {
        const kind = kindOf(ctx.params.kind!);
        const names: string[] = [];
        for await (const name of storage.list(kind)) if (NAMES[kind].test(name)) names.push(name);
        sendJson(ctx, 200, { kind, names });
      },
    },
    { method: 'GET', path: '/v1/objects/{kind}/{name}', role: 'read', maxBody: 0, handle: getObject },
    { method: 'HEAD', path: '/v1/objects/{kind}/{name}', role: 'read', maxBody: 0, handle: getObject },
    {
      method: 'PUT',
      path: '/v1/objects/{kind}/{name}',
      role: 'append',
      maxBody: MAX_PACK_BYTES,
      handle: async (ctx) => {
        const h = handleOf(ctx);
        const size = Number(ctx.req.headers['content-length']);
        if (h.kind !== 'pack' && size > MAX_SMALL_BYTES) {
          throw new HttpError('body_too_large', `a ${h.kind} object may be at most ${MAX_SMALL_BYTES} bytes`, { Connection: 'close' });
        }
        if (h.kind === 'key' && ctx.token!.role !== 'admin' && (await otherKeyExists(storage, h.name))) {
          // A key file names the scrypt cost every password client pays and may wrap another master key:
          // the append role adds the first one (init), further ones need admin.
          throw new HttpError('forbidden', 'adding a key file to a repository that has one needs a token with the admin role');
        }
        if (/^100-continue$/i.test(ctx.req.headers.expect ?? '')) ctx.res.writeContinue();
        const counted = (async function* () {
          for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
            ctx.bytesIn += chunk.length;
            yield chunk;
          }
        })();
        const outcome = await storage.putStream(h, counted, size);
        if (outcome === 'conflict') throw new HttpError('conflict', `${h.kind} ${h.name} already exists with other content; objects are never replaced`);
        sendJson(ctx, outcome === 'created' ? 201 : 200, { kind: h.kind, name: h.name, size, created: outcome === 'created' });
      },
    },
    {
      method: 'DELETE',
      path: '/v1/objects/{kind}/{name}',
      role: 'admin',
      maxBody: 0,
      handle: async (ctx) => {
        const h = handleOf(ctx);
        if (!(await storage.exists(h))) throw new HttpError('not_found', `${h.kind} ${h.name} not found`);
        await storage.delete(h);
        ctx.res.writeHead(204).end();
      },
    },
  ];
}

async function otherKeyExists(storage: Storage, name: string): Promise<boolean> {
  for await (const other of storage.list('key')) if (other !== name && NAMES.key.test(other)) return true;
  return false;
}

/** Method and path of every route, for documentation checks. */
export function routeTable(): { method: string; path: string; role: string | null }[] {
  const storage = new LocalStorage('/nonexistent');
  return [...objectRoutes(storage), ...catalogRoutes(new CatalogKeeper(storage))].map((r) => ({ method: r.method, path: r.path, role: r.role }));
}

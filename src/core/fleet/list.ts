/**
 * Every key under a prefix, page by page, every page at the first one's revision: one
 * consistent view, however large. One reply holding a fleet of 100,000 clients (16 MB) is far
 * over gRPC's 4 MiB message limit.
 */
import {type Etcd3, type IKeyValue, Range} from 'etcd3'

export const LIST_PAGE = 5_000

export async function listPrefix(etcd: Etcd3, prefix: string, page = LIST_PAGE): Promise<{kvs: IKeyValue[]; revision: string}> {
  const range = Range.prefix(prefix)
  const kvs: IKeyValue[] = []
  let key = range.start
  let revision: string | undefined
  for (;;) {
    const res = await etcd.kv.range({key, range_end: range.end, limit: page, ...(revision === undefined ? {} : {revision})})
    revision ??= res.header.revision
    for (const kv of res.kvs) kvs.push(kv)
    if (!res.more || res.kvs.length === 0) return {kvs, revision}
    // The next page starts just after this page's last key.
    key = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])])
  }
}

/** listPrefix as {key: value} strings, as etcd3's getAll().strings() gives them. */
export async function listStrings(etcd: Etcd3, prefix: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const kv of (await listPrefix(etcd, prefix)).kvs) out[kv.key.toString()] = kv.value.toString()
  return out
}

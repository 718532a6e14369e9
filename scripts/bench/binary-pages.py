#!/usr/bin/env python3
"""Where a running node's binary pages are: the resident pages of the node executable's mappings
(/proc/<pid>/pagemap, root) attributed to the binary's symbols (nm -C -S, cached in /tmp), by
rough category (V8's compilers, builtins, ICU code and data, OpenSSL, node's own code...).
BENCHMARKS.md, session 5: what a node process's file-backed RSS is made of.

    sudo python3 scripts/bench/binary-pages.py <pid>
"""
import sys, struct, subprocess, bisect, re, os, collections
pid = int(sys.argv[1]); binpath = os.path.realpath(f'/proc/{pid}/exe')
cache = '/tmp/nm-cache.txt'
if not os.path.exists(cache):
    out = subprocess.run(['nm', '-C', '--defined-only', '-S', '-n', binpath], capture_output=True, text=True).stdout
    open(cache, 'w').write(out)
syms = []
for line in open(cache):
    p = line.split(' ', 3)
    if len(p) < 4: continue
    try: a = int(p[0], 16); s = int(p[1], 16)
    except: continue
    syms.append((a, s, p[3].strip()))
syms.sort(); starts = [s[0] for s in syms]
def cat(name):
    n = name
    if 'icudt' in n: return 'icu-data'
    if n.startswith('icu_') or n.startswith('u_') or n.startswith('ucol') or n.startswith('udat') or n.startswith('ures_') : return 'icu-code'
    if 'v8::internal::compiler::turboshaft' in n: return 'v8-turboshaft'
    if 'v8::internal::compiler' in n: return 'v8-turbofan'
    if 'maglev' in n: return 'v8-maglev'
    if 'wasm' in n: return 'v8-wasm'
    if 'Builtins_' in n or 'embedded_blob' in n or 'v8_Default_embedded' in n: return 'v8-builtins'
    if 'v8::internal::Heap' in n or 'v8::internal::Scavenger' in n or 'MarkCompact' in n or 'cppgc' in n or 'v8::internal::Mark' in n: return 'v8-gc'
    if 'v8::internal::interpreter' in n or 'BytecodeGenerator' in n or 'Parser' in n or 'v8::internal::Scanner' in n: return 'v8-parser/interp'
    if n.startswith('v8::') : return 'v8-other'
    if 'node::' in n: return 'node'
    if n.startswith('uv_') or n.startswith('uv__'): return 'libuv'
    if re.match(r'^(SSL|EVP|BN_|X509|ossl|CRYPTO|OPENSSL|ASN1|PEM|RSA|EC_|tls_|ssl|OSSL|ERR_|BIO|sha|aes|CONF|DH|OBJ)', n): return 'openssl'
    if 'simdutf' in n or 'simdjson' in n: return 'simd'
    if 'ada::' in n: return 'ada'
    if n.startswith('nghttp') : return 'nghttp'
    if 'llhttp' in n: return 'llhttp'
    return 'other'
maps = []
for line in open(f'/proc/{pid}/maps'):
    f = line.split()
    if len(f) >= 6 and os.path.realpath(f[5]) == binpath:
        a, b = (int(x, 16) for x in f[0].split('-')); maps.append((a, b, int(f[2], 16), f[1]))
# ELF: vaddr of a file offset via program headers
ph = subprocess.run(['readelf', '-lW', binpath], capture_output=True, text=True).stdout
loads = [(int(m.group(1),16), int(m.group(2),16), int(m.group(3),16)) for m in re.finditer(r'LOAD\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)', ph)]
base = None
pm = open(f'/proc/{pid}/pagemap', 'rb')
tot = collections.Counter(); PAGE = 4096
for (a, b, off, perm) in maps:
    # find load with this file offset
    for (lo, lva, fsz) in loads:
        if lo <= off < lo + max(fsz, 1) or (off & ~0xfff) == (lo & ~0xfff):
            bias = a - (lva + (off - lo)) ; break
    else: bias = None
    for va in range(a, b, PAGE):
        pm.seek(va // PAGE * 8); e = struct.unpack('Q', pm.read(8))[0]
        if not (e >> 63) & 1: continue
        if bias is None: tot['unknown:'+perm] += 1; continue
        ev = va - bias
        i = bisect.bisect_right(starts, ev) - 1
        c = 'gap'
        if i >= 0 and syms[i][0] <= ev < syms[i][0] + max(syms[i][1], 1): c = cat(syms[i][2])
        elif i >= 0: c = 'near:' + cat(syms[i][2])
        tot[perm[:3] + ' ' + c] += 1
for k, v in sorted(tot.items(), key=lambda x: -x[1]): print(f'{v*4/1024:7.1f} MB  {k}')
print(f'{sum(tot.values())*4/1024:7.1f} MB  total binary resident')

#!/usr/bin/env python3
"""layering: check the module layering of src/ from its #include lines.

Usage: python3 tests/layering.py [SOURCE_ROOT]   (default: this repository)

Every src/**/*.c and *.h belongs to the module named by its folder
(src/base/log.c is module "base"; src/main.c is module "main"). The rules
(docs/architecture.md, "Modules"):

  a. include: a quoted include names a module folder ("base/log.h") and
     the file exists under src/.
  b. arrow: a module includes only itself and modules below it in RANK;
     deliver and check share a rank and never include each other; mxctl is
     a program of its own and includes only MXCTL_USES.
  c. cycle: the module graph has no cycle (checked on its own, even though
     rule b already forbids one).
  d. base: base includes nothing of ours outside base.
  e. pure: the files of the proto_lib static_library in src/meson.build
     never reach <uv.h>, <gnutls/...> or <sqlite3.h>, directly or through
     our headers.
  f. sqlite: only store/ (SQLITE_MODULES) reaches <sqlite3.h>.
  g. gnutls: only the files in GNUTLS_FILES reach <gnutls/...>.

Each violation is printed as `file:line: rule: explanation` (file relative
to src/); the exit status is 1 if there is any, 0 otherwise.
"""

import os
import re
import sys

# Arrows point down: a module may include modules of a lower rank. Equal
# rank means siblings, which never include each other (deliver <-> check).
RANK = {
    'main': 9,
    'ops': 8,
    'smtp': 7,
    'deliver': 6,
    'check': 6,
    'client': 5,
    'dns': 4,
    'store': 3,
    'msg': 2,
    'base': 1,
}
SIBLING_BANS = {('deliver', 'check'), ('check', 'deliver')}

# mxctl is a separate program (the operator's tool): outside the ranking,
# it uses only these, and no module of mxd includes it.
MXCTL_USES = {'mxctl', 'store', 'base'}

# Only the store owns SQLite. mxctl opens the queue's database itself, but
# through sdb (store/sdb.h), which serves SQLite and PostgreSQL alike.
SQLITE_MODULES = {'store'}

# The files that use GnuTLS today; any other file that reaches
# <gnutls/...> is a violation (wrap it in base/tls instead).
GNUTLS_FILES = {'base/tls.c', 'base/tls_dane.c'}


# System headers a file may not reach, by rule.
def is_uv(h):
    return h == 'uv.h'


def is_gnutls(h):
    return h.startswith('gnutls/')


def is_sqlite(h):
    return h == 'sqlite3.h'


PURE_BANNED = [('<uv.h>', is_uv), ('<gnutls/...>', is_gnutls), ('<sqlite3.h>', is_sqlite)]

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]*)[>"]')


def strip_comments(text):
    """Blank out C comments (keeping newlines), leaving literals alone."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '/' and text.startswith('/*', i):
            end = text.find('*/', i + 2)
            end = n if end < 0 else end + 2
            out.append(''.join(ch if ch == '\n' else ' ' for ch in text[i:end]))
            i = end
        elif c == '/' and text.startswith('//', i):
            end = text.find('\n', i)
            end = n if end < 0 else end
            out.append(' ' * (end - i))
            i = end
        elif c in '"\'':
            j = i + 1
            while j < n and text[j] != c and text[j] != '\n':
                j += 2 if text[j] == '\\' else 1
            j = min(j + 1, n)
            out.append(text[i:j])
            i = j
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def parse_includes(path):
    """[(line, kind, name)]: kind is '"' or '<'."""
    with open(path, encoding='utf-8', errors='replace') as f:
        text = strip_comments(f.read())
    incs = []
    for lineno, line in enumerate(text.split('\n'), 1):
        m = INCLUDE_RE.match(line)
        if m:
            incs.append((lineno, m.group(1), m.group(2).strip()))
    return incs


def module_of(rel):
    """The module of a path relative to src/, or None if it has none."""
    parts = rel.split('/')
    if len(parts) == 1:
        return 'main' if rel == 'main.c' else None
    return parts[0]


def proto_lib_files(src):
    """The source files of `proto_lib = static_library(...)` in src/meson.build."""
    path = os.path.join(src, 'meson.build')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    text = re.sub(r'#[^\n]*', '', text)
    m = re.search(r'\bproto_lib\s*=\s*static_library\s*\(', text)
    if not m:
        return None
    depth, i = 1, m.end()
    while i < len(text) and depth:
        depth += {'(': 1, ')': -1}.get(text[i], 0)
        i += 1
    body = text[m.end():i - 1]
    # Positional arguments only: stop at the first `keyword :`.
    kw = re.search(r'\b[a-z_]+\s*:', body)
    if kw:
        body = body[:kw.start()]
    names = re.findall(r"'([^']*)'", body)
    return [n for n in names[1:] if n.endswith(('.c', '.h'))]


class Tree:
    def __init__(self, src):
        self.src = src
        self.files = {}  # rel -> [(line, kind, name)]
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.endswith(('.c', '.h')):
                    full = os.path.join(dirpath, fn)
                    rel = os.path.relpath(full, src).replace(os.sep, '/')
                    self.files[rel] = parse_includes(full)

    def ours(self, rel):
        """Quoted includes of rel that resolve to a file of ours: [(line, target)]."""
        return [(ln, name) for ln, kind, name in self.files.get(rel, [])
                if kind == '"' and name in self.files]

    def reach(self, rel, pred):
        """The shortest chain [(file, line, include), ...] from rel through our
        headers to the include of a system header matching pred; None if none."""
        prev = {rel: None}
        queue = [rel]
        for cur in queue:
            for ln, kind, name in self.files.get(cur, []):
                if kind == '<' and pred(name):
                    chain = [(cur, ln, '<%s>' % name)]
                    while prev[cur]:
                        cur, ln, name = prev[cur]
                        chain.insert(0, (cur, ln, '"%s"' % name))
                    return chain
            for ln, name in self.ours(cur):
                if name not in prev:
                    prev[name] = (cur, ln, name)
                    queue.append(name)
        return None


def describe_chain(chain):
    """'a.c:3 "x/y.h" -> x/y.h:8 <uv.h>': each step's file, line and include."""
    return ' -> '.join('%s:%d %s' % step for step in chain)


def arrow_error(mod, dep):
    """Why module mod may not include module dep, or None if it may."""
    if mod == dep:
        return None
    if dep == 'mxctl':
        return 'mxctl is a program of its own; no module of mxd includes it'
    if mod == 'mxctl':
        if dep in MXCTL_USES:
            return None
        return 'mxctl may use only %s, not %s' % (', '.join(sorted(MXCTL_USES - {'mxctl'})),
                                                   dep)
    if (mod, dep) in SIBLING_BANS:
        return '%s and %s are siblings and never include each other' % (mod, dep)
    if RANK[dep] < RANK[mod]:
        return None
    way = 'sideways' if RANK[dep] == RANK[mod] else 'up'
    return '%s -> %s points %s (arrows point down: %s)' % (mod, dep, way, ranking())


def ranking():
    """'main > ops > smtp > deliver = check > ...' from RANK."""
    levels = sorted(set(RANK.values()), reverse=True)
    return ' > '.join(' = '.join(m for m in RANK if RANK[m] == r) for r in levels)


def find_cycle(graph):
    """One cycle of the module graph as [m0, m1, ..., m0], or None."""
    state = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                c = visit(d)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            c = visit(m)
            if c:
                return c
    return None


def check(root):
    src = os.path.join(root, 'src')
    if not os.path.isdir(src):
        print('layering: no src/ under %s' % root, file=sys.stderr)
        sys.exit(2)
    tree = Tree(src)
    errs = []
    graph = {}      # module -> set of modules it includes
    first = {}      # (module, dep) -> (file, line) of the first such include

    def err(rel, line, rule, msg):
        errs.append('%s:%d: %s: %s' % (rel, line, rule, msg))

    for rel in sorted(tree.files):
        mod = module_of(rel)
        if mod is None:
            err(rel, 1, 'module', 'file outside a module folder (only main.c sits in src/)')
            continue
        if mod not in RANK and mod != 'mxctl':
            err(rel, 1, 'module', 'folder %s/ is not in the ranking of tests/layering.py' % mod)
            continue
        for ln, kind, name in tree.files[rel]:
            if kind != '"':
                continue
            # a. A quoted include names a module folder and an existing file.
            dep = module_of(name)
            if dep is None or dep == 'main':
                err(rel, ln, 'include', '"%s" does not name a module folder ("base/log.h")'
                    % name)
                continue
            if name not in tree.files:
                err(rel, ln, 'include', '"%s": no such file under src/' % name)
                continue
            if dep not in RANK and dep != 'mxctl':
                err(rel, ln, 'include', '"%s": %s/ is not a known module' % (name, dep))
                continue
            if dep != mod:
                graph.setdefault(mod, set()).add(dep)
                first.setdefault((mod, dep), (rel, ln))
            # b. Arrows point down the ranking.
            why = arrow_error(mod, dep)
            if why:
                err(rel, ln, 'arrow', '"%s": %s' % (name, why))
            # d. base uses nothing of ours outside base.
            if mod == 'base' and dep != 'base':
                err(rel, ln, 'base', '"%s": base includes nothing outside base' % name)

    # c. No cycle between module folders. Each cycle found is printed and its
    # arrows are taken out, so that the next search finds another one.
    left = {m: set(deps) for m, deps in graph.items()}
    cycle = find_cycle(left)
    while cycle:
        steps = list(zip(cycle, cycle[1:]))
        where = ', '.join('%s -> %s at %s:%d' % ((a, b) + first[(a, b)]) for a, b in steps)
        rel, ln = first[steps[0]]
        err(rel, ln, 'cycle', 'module cycle %s (%s)' % (' -> '.join(cycle), where))
        for a, b in steps:
            left[a].discard(b)
        cycle = find_cycle(left)

    # e. The pure protocol files reach no libuv, GnuTLS or SQLite header.
    pure = proto_lib_files(src)
    if pure is None:
        err('meson.build', 1, 'pure', 'no `proto_lib = static_library(...)` to read the '
            'pure files from')
        pure = []
    for rel in pure:
        if rel not in tree.files:
            err('meson.build', 1, 'pure', 'proto_lib lists %s, which does not exist' % rel)
            continue
        for what, pred in PURE_BANNED:
            chain = tree.reach(rel, pred)
            if chain:
                err(rel, chain[0][1], 'pure', 'proto_lib file reaches %s: %s'
                    % (what, describe_chain(chain)))

    # f, g. Only the store reaches SQLite; only GNUTLS_FILES GnuTLS.
    for rel in sorted(tree.files):
        mod = module_of(rel)
        chain = tree.reach(rel, is_sqlite)
        if chain and mod not in SQLITE_MODULES:
            err(rel, chain[0][1], 'sqlite', 'only store/ may use SQLite: %s'
                % describe_chain(chain))
        chain = tree.reach(rel, is_gnutls)
        if chain and rel not in GNUTLS_FILES:
            err(rel, chain[0][1], 'gnutls', 'only %s may use GnuTLS: %s'
                % (', '.join(sorted(GNUTLS_FILES)), describe_chain(chain)))

    for e in errs:
        print(e)
    arrows = sum(len(v) for v in graph.values())
    if errs:
        print('layering: %d files, %d module arrows, %d violations'
              % (len(tree.files), arrows, len(errs)))
        return 1
    print('layering: %d files, %d module arrows, ok' % (len(tree.files), arrows))
    return 0


def main():
    if len(sys.argv) > 2:
        print('usage: layering.py [SOURCE_ROOT]', file=sys.stderr)
        return 2
    root = sys.argv[1] if len(sys.argv) == 2 else \
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return check(root)


if __name__ == '__main__':
    sys.exit(main())

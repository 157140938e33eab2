import test from 'ava';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  exportLine, htmlToNote, inScope, normalizeUrl, notePath, relativeLink, renderBrokenLinks, renderIndex, renderNote,
  rewriteLinks, scopeOf,
} from '../examples/site-notes/lib/mod.ts';

const SITE = fileURLToPath(new URL('../examples/site-notes/sample-site/', import.meta.url));
const docs = scopeOf('https://docs.example.org/docs/guide/index.html');

test('site-notes - normalizeUrl drops the fragment and default ports, lower-cases the host', (t) => {
  t.is(normalizeUrl('intro.html#install', 'https://x.org/docs/'), 'https://x.org/docs/intro.html');
  t.is(normalizeUrl('HTTPS://X.ORG:443/a', 'https://x.org/'), 'https://x.org/a');
  t.is(normalizeUrl('http://x.org:80/a', 'https://x.org/'), 'http://x.org/a');
  t.is(normalizeUrl('http://x.org:8080/a', 'https://x.org/'), 'http://x.org:8080/a');
});

test('site-notes - normalizeUrl folds index.html into its folder', (t) => {
  t.is(normalizeUrl('guide/index.html', 'https://x.org/docs/'), 'https://x.org/docs/guide/');
  t.is(normalizeUrl('guide/index.htm?b=1', 'https://x.org/docs/'), 'https://x.org/docs/guide/?b=1');
  t.is(normalizeUrl('guide/', 'https://x.org/docs/'), 'https://x.org/docs/guide/');
  t.is(normalizeUrl('guide/myindex.html', 'https://x.org/docs/'), 'https://x.org/docs/guide/myindex.html');
});

test('site-notes - normalizeUrl resolves ../ and keeps a sorted query', (t) => {
  t.is(normalizeUrl('../api/auth.html', 'https://x.org/docs/guide/intro.html'), 'https://x.org/docs/api/auth.html');
  t.is(normalizeUrl('../../../../up', 'https://x.org/a/b.html'), 'https://x.org/up');
  t.is(normalizeUrl('p?b=2&a=1&a=0', 'https://x.org/'), 'https://x.org/p?a=1&a=0&b=2');
  t.is(normalizeUrl('p?', 'https://x.org/'), 'https://x.org/p');
  t.is(normalizeUrl('#top', 'https://x.org/docs/page.html?v=1#x'), 'https://x.org/docs/page.html?v=1');
});

test('site-notes - normalizeUrl rejects links that are not pages', (t) => {
  for (const href of ['mailto:a@example.com', 'javascript:void(0)', 'data:text/html,hi', 'ftp://x.org/f', 'tel:+123', 'http://[bad']) {
    t.is(normalizeUrl(href, 'https://x.org/'), null, href);
  }
  t.is(normalizeUrl('b.html', 'file:///site/a.html'), 'file:///site/b.html');
});

test('site-notes - scopeOf takes the start URL folder', (t) => {
  t.deepEqual(docs, { origin: 'https://docs.example.org', pathPrefix: '/docs/guide/' });
  t.deepEqual(scopeOf('https://x.org/docs/'), { origin: 'https://x.org', pathPrefix: '/docs/' });
  t.deepEqual(scopeOf('https://x.org/docs'), { origin: 'https://x.org', pathPrefix: '/' });
  t.deepEqual(scopeOf('http://x.org:80'), { origin: 'http://x.org', pathPrefix: '/' });
  t.deepEqual(scopeOf('file:///srv/site/index.html'), { origin: 'file://', pathPrefix: '/srv/site/' });
  t.throws(() => scopeOf('mailto:a@example.com'), { instanceOf: TypeError });
});

test('site-notes - inScope needs the same origin and the folder prefix', (t) => {
  t.true(inScope('https://docs.example.org/docs/guide/', docs));
  t.true(inScope('https://docs.example.org/docs/guide/api/x.html?q=1', docs));
  t.false(inScope('https://docs.example.org/docs/other.html', docs), 'sibling folder');
  t.false(inScope('https://docs.example.org/docs/guide', docs), 'folder without slash');
  t.false(inScope('https://docs.example.org/docs/guidebook/', docs), 'prefix is a folder, not a string');
  t.false(inScope('http://docs.example.org/docs/guide/', docs), 'other scheme');
  t.false(inScope('https://docs.example.org:8443/docs/guide/', docs), 'other port');
  t.false(inScope('not a url', docs));
  t.true(inScope('file:///srv/site/a/b.html', scopeOf('file:///srv/site/index.html')));
});

test('site-notes - notePath gives readable paths for folders and .html pages', (t) => {
  const at = (path: string) => notePath(`https://docs.example.org/docs/guide/${path}`, docs);
  t.is(at(''), 'index.md');
  t.is(at('index.html'), 'index.md');
  t.is(at('intro.html'), 'intro.md');
  t.is(at('api/'), 'api/index.md');
  t.is(at('api/v1.2/auth.html'), 'api/v1.2/auth.md');
  t.is(at('my%20notes.html'), 'my notes.md');
  t.is(at('caf%C3%A9.html'), 'café.md');
});

test('site-notes - notePath folds query strings in with a hash, without collisions', (t) => {
  const at = (path: string) => notePath(`https://docs.example.org/docs/guide/${path}`, docs);
  t.regex(at('page.html?q=abc'), /^page__q-[0-9a-f]{8}\.md$/);
  t.is(at('page.html?b=2&a=1'), at('page.html?a=1&b=2'), 'same page, same note');
  const paths = ['page.html', 'page.html?q=abc', 'page.html?q=abd', 'page', 'page.htm', 'page/', 'page.md', 'page__h-1.html',
    'a:b.html', 'a_b.html', 'a%2Fb.html', 'a/b.html', 'x.md/', 'x.html', 'CON.html', '.html', '', 'index'];
  const notes = paths.map(at);
  t.is(new Set(notes).size, paths.length, notes.join(' '));
  t.true(notes.every((n) => n.endsWith('.md')));
});

test('site-notes - notePath never escapes the vault', (t) => {
  const hostile = ['..%2F..%2Fetc%2Fpasswd.html', '%2e%2e/%2e%2e/x.html', '.hidden.html', 'a%5Cb.html', 'a%00b.html', '%20.html',
    'nul.txt', `${'x'.repeat(300)}.html`, '%E0%A4%A.html', 'a//b.html'];
  for (const path of hostile) {
    const url = `https://docs.example.org/docs/guide/${path}`;
    if (!inScope(normalizeUrl(url, url)!, docs)) continue;
    const note = notePath(url, docs);
    t.false(note.startsWith('/'), note);
    t.false(note.split('/').some((s) => s === '..' || s === '.' || s === '' || s.startsWith('.')), note);
    t.regex(note, /^[^\\\0]+\.md$/);
    t.true(note.split('/').every((s) => s.length <= 120), note);
  }
  t.throws(() => notePath('https://docs.example.org/docs/other.html', docs), { instanceOf: RangeError });
});

test('site-notes - relativeLink walks between notes and percent-encodes', (t) => {
  t.is(relativeLink('api/index.md', 'intro.md'), '../intro.md');
  t.is(relativeLink('intro.md', 'api/index.md'), 'api/index.md');
  t.is(relativeLink('a/b/c.md', 'a/d/e.md'), '../d/e.md');
  t.is(relativeLink('a/b.md', 'a/b.md'), 'b.md');
  t.is(relativeLink('index.md', 'my notes (draft).md'), 'my%20notes%20%28draft%29.md');
  t.is(relativeLink('x.md', 'café#1.md'), 'caf%C3%A9%231.md');
});

const PAGE = `<!doctype html><html><head><title> Install &amp; run </title><base href="/docs/guide/">
<script>var x = '<a href="bad.html">';</script><style>a { color: red }</style></head>
<body><header><a href="index.html">Home</a></header><nav><a href="nav-only.html">Nav</a></nav>
<main><h1>Installing</h1><p>First read <a href="intro.html#why">the intro</a> and <a href="./intro.html">again</a>,
then <a href="api/index.html">the API</a>, <a href="https://example.com/x">elsewhere</a>,
<a href="mailto:a@example.com">mail</a> or <a href="javascript:void(0)">nothing</a>.</p>
<h2>With   npm</h2><pre><code class="language-sh">npm install wren
</code></pre><ul><li>one</li><li>two</li></ul><noscript>enable js</noscript></main>
<footer><a href="../legal.html">Legal</a></footer></body></html>`;

test('site-notes - htmlToNote extracts title, headings and a clean Markdown body', (t) => {
  const note = htmlToNote(PAGE, 'https://docs.example.org/somewhere/else.html');
  t.is(note.title, 'Install & run');
  t.deepEqual(note.headings, [{ level: 1, text: 'Installing' }, { level: 2, text: 'With npm' }]);
  t.true(note.markdown.startsWith('# Installing\n'));
  t.true(note.markdown.includes('```sh\nnpm install wren\n```'));
  t.true(note.markdown.includes('\n- one\n- two'));
  t.is(htmlToNote('<ol start="9"><li><p>a</p><p>b</p></li><li>c</li></ol>', 'https://x.org/').markdown, '9. a\n\n   b\n\n10. c');
  for (const gone of ['Nav', 'Home', 'Legal', 'color: red', 'bad.html', 'enable js']) t.false(note.markdown.includes(gone), gone);
});

test('site-notes - htmlToNote links are absolute, canonical and de-duplicated', (t) => {
  const note = htmlToNote(PAGE, 'https://docs.example.org/somewhere/else.html');
  t.deepEqual(note.links, [
    'https://docs.example.org/docs/guide/',
    'https://docs.example.org/docs/guide/nav-only.html',
    'https://docs.example.org/docs/guide/intro.html',
    'https://docs.example.org/docs/guide/api/',
    'https://example.com/x',
    'https://docs.example.org/docs/legal.html',
  ]);
  t.deepEqual(note.bodyLinks, ['https://docs.example.org/docs/guide/intro.html', 'https://docs.example.org/docs/guide/api/', 'https://example.com/x']);
  t.true(note.markdown.includes('[the intro](https://docs.example.org/docs/guide/intro.html#why)'));
  t.true(note.markdown.includes('[the API](https://docs.example.org/docs/guide/api/)'));
  t.true(note.markdown.includes('[mail](mailto:a@example.com)'));
  t.false(note.markdown.includes('javascript:'));
});

test('site-notes - htmlToNote falls back to the first h1, then the URL', (t) => {
  t.is(htmlToNote('<body><h1>Big  <em>Title</em></h1></body>', 'https://x.org/a.html').title, 'Big Title');
  t.is(htmlToNote('<p>text</p>', 'https://x.org/docs/getting-started.html').title, 'getting-started');
  t.is(htmlToNote('<p>text</p>', 'https://x.org/docs/api/').title, 'api');
  t.is(htmlToNote('<p>text</p>', 'https://x.org/').title, 'x.org');
});

test('site-notes - htmlToNote renders tables as pipe tables', (t) => {
  const note = htmlToNote('<article><table><tr><th>A</th><th>B</th></tr><tr><td>1 | 2</td><td>3</td></tr></table></article>', 'https://x.org/');
  t.is(note.markdown, '| A | B |\n| --- | --- |\n| 1 \\| 2 | 3 |');
});

test('site-notes - rewriteLinks rewrites archived pages and keeps external links', (t) => {
  const pages = new Map([['https://x.org/d/intro.html', 'intro.md'], ['https://x.org/d/a (b).html', 'a _b_ h.md'], ['https://x.org/d/p(1).html', 'p_1_.md']]);
  const resolve = (url: string) => pages.get(url);
  const md = [
    'See [the \\[intro\\]](https://x.org/d/intro.html#why "Intro") and [out](https://example.com/a_(b)).',
    '![img](https://x.org/d/intro.html) [p](<https://x.org/d/a (b).html>) [q](https://x.org/d/p\\(1\\).html) [r](https://x.org/d/p(1).html#s)',
    'Code: `[x](https://x.org/d/intro.html)`',
    '```',
    '[y](https://x.org/d/intro.html)',
    '```',
    '[gone](https://x.org/d/missing.html) [mail](mailto:a@example.com)',
  ].join('\n');
  t.is(rewriteLinks(md, 'api/index.md', resolve), [
    'See [the \\[intro\\]](../intro.md#why "Intro") and [out](https://example.com/a_(b)).',
    '![img](../intro.md) [p](../a%20_b_%20h.md) [q](../p_1_.md) [r](../p_1_.md#s)',
    'Code: `[x](https://x.org/d/intro.html)`',
    '```',
    '[y](https://x.org/d/intro.html)',
    '```',
    '[gone](https://x.org/d/missing.html) [mail](mailto:a@example.com)',
  ].join('\n'));
});

test('site-notes - renderNote writes front matter, body and sorted backlinks', (t) => {
  const page = { url: 'https://x.org/d/intro.html', title: 'Intro: "quoted"', markdown: '# Intro\n\nBody.\n' };
  const backlinks = [{ title: 'Zed', notePath: 'z.md' }, { title: 'API [v1]', notePath: 'api/index.md' }, { title: 'Zed', notePath: 'z.md' }];
  t.is(renderNote(page, backlinks, 'intro.md'), [
    '---', 'title: "Intro: \\"quoted\\""', 'source: "https://x.org/d/intro.html"', '---', '',
    '# Intro', '', 'Body.', '', '## Backlinks', '', '- [API \\[v1\\]](api/index.md)', '- [Zed](z.md)', '',
  ].join('\n'));
  t.false(renderNote(page, [], 'intro.md').includes('Backlinks'));
});

test('site-notes - renderIndex nests notes by folder, sorted, links into vault/', (t) => {
  const pages = [
    { title: 'Tuning', notePath: 'guide/advanced/tuning.md', url: 'u5' },
    { title: 'Guide', notePath: 'guide/index.md', url: 'u2' },
    { title: 'FAQ', notePath: 'faq.md', url: 'u4' },
    { title: 'Home', notePath: 'index.md', url: 'u1' },
    { title: 'Config', notePath: 'guide/configuration.md', url: 'u3' },
    { title: 'My page', notePath: 'misc/my page.md', url: 'u6' },
  ];
  const expected = [
    '# Site notes', '', '6 pages.', '',
    '- [Home](vault/index.md)',
    '- [FAQ](vault/faq.md)',
    '- [Guide](vault/guide/index.md)',
    '  - [Config](vault/guide/configuration.md)',
    '  - advanced/',
    '    - [Tuning](vault/guide/advanced/tuning.md)',
    '- misc/',
    '  - [My page](vault/misc/my%20page.md)',
    '',
  ].join('\n');
  t.is(renderIndex(pages), expected);
  t.is(renderIndex([...pages].reverse()), expected);
});

test('site-notes - renderBrokenLinks groups by target deterministically', (t) => {
  t.is(renderBrokenLinks([]), '# Broken links\n\nNo broken links.\n');
  const broken = [
    { from: 'https://x.org/d/b.html', fromNote: 'b.md', to: 'https://x.org/d/missing.html', status: 404 },
    { from: 'https://x.org/d/', fromNote: 'index.md', to: 'https://x.org/d/gone/', status: 'ENOENT' },
    { from: 'https://x.org/d/a.html', fromNote: 'a.md', to: 'https://x.org/d/missing.html', status: 404 },
    { from: 'https://x.org/d/a.html', fromNote: 'a.md', to: 'https://x.org/d/missing.html', status: 404 },
  ];
  const expected = [
    '# Broken links', '', '2 broken targets.', '',
    '## <https://x.org/d/gone/>', '', 'Status: ENOENT', '', '- [index.md](vault/index.md) (https://x.org/d/)', '',
    '## <https://x.org/d/missing.html>', '', 'Status: 404', '',
    '- [a.md](vault/a.md) (https://x.org/d/a.html)', '- [b.md](vault/b.md) (https://x.org/d/b.html)', '',
  ].join('\n');
  t.is(renderBrokenLinks(broken), expected);
  t.is(renderBrokenLinks([...broken].reverse()), expected);
});

test('site-notes - exportLine is one JSON object with a fixed key order', (t) => {
  const page = { notePath: 'a.md', links: ['https://x.org/b'], title: 'A\nline', url: 'https://x.org/a' };
  const line = exportLine(page);
  t.is(line, '{"url":"https://x.org/a","title":"A\\nline","path":"a.md","links":["https://x.org/b"]}');
  t.false(line.includes('\n'));
  t.deepEqual(JSON.parse(exportLine({ ...page, headings: [{ level: 1, text: 'A' }] })).headings, [{ level: 1, text: 'A' }]);
});

/** Links in the sample site that point at pages that intentionally do not exist. */
const BROKEN = ['guide/migration.html', 'reference/plugins.html', 'getting-started/troubleshooting/'];

function htmlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? htmlFiles(join(dir, e.name)) : e.name.endsWith('.html') ? [join(dir, e.name)] : []);
}

test('site-notes - every sample-site page parses and its in-scope links exist or are the known broken ones', (t) => {
  const scope = scopeOf(pathToFileURL(join(SITE, 'index.html')).href);
  const files = htmlFiles(SITE);
  t.true(files.length >= 12 && files.length <= 20, `${files.length} pages`);
  const brokenSeen = new Set<string>();
  const external = new Set<string>();
  const notes = new Set<string>();
  for (const file of files) {
    const url = normalizeUrl(pathToFileURL(file).href, 'file:///')!;
    const note = htmlToNote(readFileSync(file, 'utf8'), url);
    t.truthy(note.title, file);
    t.true(note.headings.length > 0 && note.markdown.length > 0, file);
    notes.add(notePath(url, scope));
    for (const link of note.links) {
      if (!inScope(link, scope)) {
        external.add(link);
        continue;
      }
      const target = fileURLToPath(link.endsWith('/') ? `${link}index.html` : link);
      if (existsSync(target)) continue;
      const rel = relative(SITE, fileURLToPath(link)).split('\\').join('/') + (link.endsWith('/') ? '/' : '');
      t.true(BROKEN.includes(rel), `${file} links to missing ${rel}`);
      brokenSeen.add(rel);
    }
  }
  t.deepEqual([...brokenSeen].sort(), [...BROKEN].sort());
  t.is(notes.size, files.length, 'one note per page');
  t.true([...external].some((u) => u.startsWith('https://example.com/')));
  t.true([...external].some((u) => u.startsWith('file://') && !u.startsWith(pathToFileURL(SITE).href)), 'a ../ link leaves the scope');
});

test('site-notes - a crawl of the sample site from its index reaches every page', (t) => {
  const start = normalizeUrl(pathToFileURL(join(SITE, 'index.html')).href, 'file:///')!;
  const scope = scopeOf(start);
  const seen = new Set([start]);
  const queue = [start];
  while (queue.length > 0) {
    const url = queue.shift()!;
    const file = fileURLToPath(url.endsWith('/') ? `${url}index.html` : url);
    if (!existsSync(file)) continue;
    for (const link of htmlToNote(readFileSync(file, 'utf8'), url).bodyLinks) {
      if (inScope(link, scope) && !seen.has(link)) {
        seen.add(link);
        queue.push(link);
      }
    }
  }
  const reached = [...seen].filter((u) => existsSync(fileURLToPath(u.endsWith('/') ? `${u}index.html` : u)));
  t.is(reached.length, htmlFiles(SITE).length);
});

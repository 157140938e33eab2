/**
 * The one HTML→Markdown converter of site-notes: turndown with ATX headings, fenced code
 * blocks, `-` bullets, and `- item` lists and GitHub-style pipe tables (turndown has no
 * table rule of its own).
 */
import TurndownService from 'turndown';

/** Converts an HTML fragment to Markdown. Output ends without trailing blank lines. */
export function toMarkdown(html: string): string {
  return turndown.turndown(html).trim();
}

const turndown = new TurndownService({
  headingStyle: 'atx',
  codeBlockStyle: 'fenced',
  fence: '```',
  bulletListMarker: '-',
  emDelimiter: '_',
  strongDelimiter: '**',
  linkStyle: 'inlined',
});

// turndown pads list markers to four columns (`-   item`); one space reads better and is
// equally valid CommonMark as long as continuation lines are indented to the content.
turndown.addRule('listItem', {
  filter: 'li',
  replacement: (content, node) => {
    const parent = node.parentElement;
    let marker = '-';
    if (parent?.nodeName === 'OL') {
      const start = Number(parent.getAttribute('start') ?? '1');
      marker = `${(Number.isInteger(start) ? start : 1) + Array.from(parent.children).indexOf(node)}.`;
    }
    const paragraph = content.endsWith('\n');
    const body = content.replace(/^\n+|\n+$/g, '') + (paragraph ? '\n' : '');
    return `${marker} ${body.replace(/\n(?=.)/g, `\n${' '.repeat(marker.length + 1)}`)}${node.nextSibling ? '\n' : ''}`;
  },
});

turndown.addRule('tableSection', {
  filter: ['thead', 'tbody', 'tfoot'],
  replacement: (content) => content,
});

turndown.addRule('tableCell', {
  filter: ['th', 'td'],
  replacement: (content, node) => {
    const cell = content.trim().replace(/\s*\n+\s*/g, ' ').replace(/\|/g, '\\|');
    return `${node.previousElementSibling ? '' : '|'} ${cell} |`;
  },
});

turndown.addRule('tableRow', {
  filter: 'tr',
  replacement: (content, node) => {
    const row = `\n${content}`;
    if (!isFirstRow(node)) return row;
    const cells = Array.from(node.children).filter((c) => c.nodeName === 'TH' || c.nodeName === 'TD');
    return `${row}\n|${cells.map(() => ' --- |').join('')}`;
  },
});

turndown.addRule('table', {
  filter: 'table',
  replacement: (content) => `\n\n${content.trim()}\n\n`,
});

/** The first row of its table: it becomes the pipe table's header row. */
function isFirstRow(row: HTMLElement): boolean {
  let table: Element | null = row.parentElement;
  while (table && table.nodeName !== 'TABLE') table = table.parentElement;
  return table !== null && table.querySelector('tr') === row;
}

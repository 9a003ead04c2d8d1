"""The pages' Jinja2 templates, style sheet and script, kept in the package as text.

Everything a page needs is written into it: the style sheet and the one small
script (sortable tables, checkpoint sliders) are inlined once per page, and a
Content-Security-Policy forbids every request but ``data:`` images, so a page
that tried to fetch anything would show it as a console error in the browser
test. Colours are the Okabe–Ito set.
"""

from __future__ import annotations

import jinja2
from markupsafe import Markup

__all__ = ["render"]

STYLE = """
:root { --ink: #1b1b1b; --muted: #5b5b5b; --line: #d8d8d8; --band: #f4f6f8; --accent: #0072B2; --warn: #D55E00; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       margin: 0; background: #fff; }
main { max-width: 1360px; margin: 0 auto; padding: 20px 28px 60px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--accent); }
h3 { font-size: 16px; margin: 22px 0 6px; }
a { color: var(--accent); }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em; background: var(--band); padding: 0 3px; border-radius: 3px; }
.subtitle { color: var(--muted); margin: 0 0 14px; }
nav.toc { font-size: 14px; margin: 6px 0 18px; display: flex; flex-wrap: wrap; gap: 4px 14px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.facts dt { color: var(--muted); font-weight: 600; }
dl.facts dd { margin: 0; }
details { margin: 10px 0; }
details > summary { cursor: pointer; color: var(--accent); }
details.fold { margin: 0; }
details.fold > summary { display: block; list-style: none; color: inherit; }
details.fold > summary::-webkit-details-marker { display: none; }
details.fold > summary > :is(h2, h3)::before { content: "\\25BE\\00A0"; color: var(--muted); font-size: 0.8em; }
details.fold:not([open]) > summary > :is(h2, h3)::before { content: "\\25B8\\00A0"; }
nav.toc button { font: inherit; font-size: 13px; color: var(--accent); background: none; border: 1px solid var(--line); border-radius: 3px; padding: 0 6px; cursor: pointer; }
.headlines { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
table.headline { font-size: 13.5px; font-variant-numeric: tabular-nums; }
table.headline td, table.headline th { padding: 2px 9px; }
p.sizes { color: var(--muted); font-size: 13px; margin: 0 0 12px; }
pre { background: var(--band); padding: 10px; overflow-x: auto; font-size: 12.5px; line-height: 1.35; }
.warnings { border-left: 4px solid var(--warn); background: #fdf1ea; padding: 8px 14px; margin: 14px 0; }
.warnings li { margin: 2px 0; }
.note { color: var(--muted); font-style: italic; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; align-items: start; }
.figures.wide { grid-template-columns: 1fr; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); background: #fff; }
figcaption { font-size: 12.5px; color: var(--muted); margin-top: 3px; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13.5px; }
caption { text-align: left; color: var(--muted); font-size: 13px; padding-bottom: 4px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: right; white-space: nowrap; }
th { background: var(--band); font-weight: 600; }
th:first-child, td:first-child, th.text, td.text { text-align: left; }
.scroll { overflow-x: auto; }
dl.numbers { columns: 4 250px; column-gap: 22px; margin: 6px 0 14px; font-size: 13.5px; }
dl.numbers div { break-inside: avoid; display: flex; justify-content: space-between; border-bottom: 1px solid var(--line); padding: 2px 0; }
dl.numbers dt { color: var(--muted); overflow-wrap: anywhere; }
dl.numbers dd { margin: 0 0 0 10px; font-variant-numeric: tabular-nums; font-weight: 600; }
.flow { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.flow figure { max-width: 100%; }
.paragraph { max-width: 980px; }
.slider { border: 1px solid var(--line); padding: 10px; margin: 12px 0; }
.slider .frames { display: flex; gap: 12px; align-items: flex-start; flex-wrap: wrap; }
.slider .frames img { max-width: 100%; height: auto; border: 1px solid var(--line); }
.slider input[type=range] { width: 420px; vertical-align: middle; }
table.sortable th { cursor: pointer; user-select: none; }
#runs td.name { white-space: normal; max-width: 16em; }  /* a study's trials: long paths, broken after a slash */
#runs td.name .seg { white-space: nowrap; }
#runs td.task { white-space: normal; max-width: 24em; }  /* long task labels wrap, the numbers stay in view */
#runs .varied { color: #555; font-size: 0.85em; }
#runs .varied .part { white-space: nowrap; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; font-size: 10px; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; font-size: 10px; }
svg.spark { display: block; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; }
"""

SCRIPT = """
(function () {
  // Sortable tables: click a header; cells sort by data-sort when given, else by their text.
  function key(cell) {
    var raw = cell.getAttribute('data-sort');
    if (raw === null) raw = cell.textContent.trim();
    var number = parseFloat(raw);
    return isNaN(number) || !/^-?[0-9.]/.test(raw) ? {n: null, s: raw.toLowerCase()} : {n: number, s: raw};
  }
  function compare(a, b) {
    if (a.n !== null && b.n !== null) return a.n - b.n;
    if (a.n !== null) return -1;
    if (b.n !== null) return 1;
    return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var headers = table.querySelectorAll('thead th');
    headers.forEach(function (th, column) {
      th.addEventListener('click', function () {
        var ascending = th.getAttribute('aria-sort') !== 'ascending';
        headers.forEach(function (other) { other.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var c = compare(key(r1.cells[column]), key(r2.cells[column]));
          return ascending ? c : -c;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  // Fold or unfold every section at once.
  document.querySelectorAll('button[data-fold]').forEach(function (button) {
    button.addEventListener('click', function () {
      var open = button.getAttribute('data-fold') === 'open';
      document.querySelectorAll('details.fold').forEach(function (d) { d.open = open; });
    });
  });
  // Checkpoint sliders: show the frame the range input points at.
  document.querySelectorAll('.slider').forEach(function (slider) {
    var input = slider.querySelector('input[type=range]');
    var frames = slider.querySelectorAll('.frame');
    var label = slider.querySelector('.label');
    function show() {
      var i = parseInt(input.value, 10);
      frames.forEach(function (frame, j) { frame.hidden = j !== i; });
      label.textContent = frames[i].getAttribute('data-label');
    }
    input.addEventListener('input', show);
    show();
  });
})();
"""

HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head>
"""

MACROS = """
{% macro table(t, cls="") -%}
<div class="scroll"><table class="{{ cls }}"><caption>{{ t.caption }}</caption>
<thead><tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in t.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table></div>
{%- endmacro %}
{% macro image(img) -%}
<figure>{% if img.uri %}<img src="{{ img.uri }}" alt="{{ img.title }}"{% if img.width %} width="{{ img.width }}"{% endif %}{% if img.link %} data-file="{{ img.link }}"{% endif %}>{% else %}<p class="note">{{ img.title }}: {{ img.note }}{% if img.link %} — <a href="{{ img.link }}">the figure's file</a>{% endif %}</p>{% endif %}
<figcaption>{{ img.title }}</figcaption></figure>
{%- endmacro %}
{% macro slider(s) -%}
<div class="slider"><div><strong>{{ s.title }}</strong>:
<input type="range" min="0" max="{{ s.frames|length - 1 }}" value="{{ s.frames|length - 1 }}" aria-label="checkpoint"> <span class="label"></span></div>
<div class="frames">{% if s.fixed and s.fixed.uri %}<img src="{{ s.fixed.uri }}" alt="{{ s.fixed.title }}"{% if s.fixed.width %} width="{{ s.fixed.width }}"{% endif %}>{% endif %}
{% for f in s.frames %}<div class="frame" data-label="{{ s.labels[loop.index0] }}">{% if f.uri %}<img src="{{ f.uri }}" alt="{{ f.title }}"{% if f.width %} width="{{ f.width }}"{% endif %}>{% else %}<p class="note">{{ f.note }}</p>{% endif %}</div>{% endfor %}
</div></div>
{%- endmacro %}
{% macro analysis(section, prefix="") -%}
<section id="{{ prefix }}analysis-{{ section.name }}"><details class="fold" open><summary><h3>{{ section.name }} — {{ section.description }}</h3></summary>
<div class="paragraph">{% for p in section.paragraphs %}{{ p|safe }}{% endfor %}</div>
{% for part in section.parts %}
<h4>{{ part.name }}{% if part.step is not none %} (checkpoint step {{ part.step }}){% endif %}</h4>
<div class="headlines" aria-label="headline">{% for t in part.headline %}{{ table(t, "headline") }}{% endfor %}</div>
{% if part.sizes %}<p class="sizes">{% for what, count in part.sizes %}{{ what }}: {{ count }}{% if not loop.last %} · {% endif %}{% endfor %}</p>{% endif %}
{% if part.slider %}{{ slider(part.slider) }}{% endif %}
<div class="flow">{% for img in part.figures %}{{ image(img) }}{% endfor %}</div>
{% endfor %}
</details></section>
{%- endmacro %}
"""

RUN_PAGE = HEAD + MACROS + """
<body><main>
<h1>{{ name }}</h1>
<p class="subtitle">{{ task_label }} · nrecur run report · <code>{{ path }}</code></p>
<nav class="toc"><a href="#overview">overview</a><a href="#training">training curves</a><a href="#evaluation">evaluation</a>
{% for s in sections %}<a href="#analysis-{{ s.name }}">{{ s.name }}</a>{% endfor %}{% if earlier %}<a href="#earlier">earlier checkpoints</a>{% endif %}
{% if index_link %}<a href="{{ index_link }}">all runs</a>{% endif %}
<button type="button" data-fold="close">fold all</button><button type="button" data-fold="open">unfold all</button></nav>
{% if warnings %}<div class="warnings"><strong>While reading this run:</strong><ul>{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul></div>{% endif %}
<section id="overview"><details class="fold" open><summary><h2>Overview</h2></summary>
<dl class="facts">{% for key, value in facts %}<dt>{{ key }}</dt><dd>{{ value }}</dd>{% endfor %}</dl>
<details><summary>full config (config.json)</summary><pre>{{ config_json }}</pre></details>
</details></section>
<section id="training"><details class="fold" open><summary><h2>Training curves</h2></summary>
{% if curves_note %}<p class="note">{{ curves_note }}</p>{% endif %}
<div class="flow">{% for img in curves %}{{ image(img) }}{% endfor %}</div>
</details></section>
<section id="evaluation"><details class="fold" open><summary><h2>Evaluation</h2></summary>
{% if not tables %}<p class="note">training has not evaluated yet: no evaluation tables.</p>{% endif %}
{% for t in tables %}{{ table(t) }}{% endfor %}
</details></section>
<section id="analyses"><h2>Analyses</h2>
{% if not sections %}<p class="note">no analyses in {{ analysis_dir }} yet (<code>nrecur analyze {{ path }} --what all</code> writes them).</p>{% endif %}
{% for s in sections %}{{ analysis(s) }}{% endfor %}
</section>
{% if earlier %}<section id="earlier"><h2>Analyses of earlier checkpoints</h2>
{% for step, secs in earlier %}<details><summary>checkpoint step {{ step }}</summary>{% for s in secs %}{{ analysis(s, "step" ~ step ~ "-") }}{% endfor %}</details>{% endfor %}
</section>{% endif %}
<footer>Written by <code>nrecur report</code> {{ version }}. Every figure, style and script is inside this file.</footer>
</main>
<script>{{ script }}</script>
</body></html>
"""

INDEX_PAGE = HEAD + MACROS + """
<body><main>
<h1>{{ title }}</h1>
<p class="subtitle">{{ runs|length }} run{{ "" if runs|length == 1 else "s" }} under <code>{{ path }}</code>. Click a column to sort.</p>
{% if warnings %}<div class="warnings"><strong>Left out or damaged:</strong><ul>{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul></div>{% endif %}
<div class="scroll"><table class="sortable" id="runs">
<thead><tr><th>run</th><th class="text">task</th><th>parameters</th><th>steps</th><th>time (s)</th><th>final KL</th><th>KL threshold</th><th>threshold step</th><th class="text">status</th><th class="text">eval KL over training (log)</th></tr></thead>
<tbody>{% for r in runs %}<tr>
<td class="text name" data-sort="{{ r.name }}">{% set shown %}{% for part in r.name.split("/") %}<span class="seg">{{ part }}{% if not loop.last %}/{% endif %}</span><wbr>{% endfor %}{% endset %}{% if r.link %}<a href="{{ r.link }}">{{ shown }}</a>{% else %}{{ shown }}{% endif %}</td>
<td class="text task">{{ r.task }}{% if r.varied %}<br><span class="varied" title="what differs from the runs beside it, and where a fine-tuned run's weights came from">{% for part in r.varied %}<span class="part">{{ part }}</span>{% if not loop.last %} · {% endif %}{% endfor %}</span>{% endif %}</td><td data-sort="{{ r.parameters_sort }}">{{ r.parameters }}</td><td data-sort="{{ r.steps_sort }}">{{ r.steps }}</td>
<td data-sort="{{ r.seconds_sort }}">{{ r.seconds }}</td><td data-sort="{{ r.kl_sort }}">{{ r.kl }}</td><td>{{ r.threshold }}</td>
<td data-sort="{{ r.threshold_step_sort }}">{{ r.threshold_step }}</td><td class="text">{{ r.status }}</td><td class="text" data-sort="{{ r.kl_sort }}">{{ r.spark|safe }}</td></tr>{% endfor %}</tbody>
</table></div>
{% for shown in figure_folders %}<section><h2>{{ shown.name }}</h2><div class="figures">{% for img in shown.figures %}{{ image(img) }}{% endfor %}</div></section>{% endfor %}
<footer>Written by <code>nrecur report</code> {{ version }}. Every figure, style and script is inside this file.</footer>
</main>
<script>{{ script }}</script>
</body></html>
"""

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.DictLoader({"run.html": RUN_PAGE, "index.html": INDEX_PAGE}),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context) -> str:
    """Render ``run.html`` or ``index.html`` with ``context`` (style and script added)."""
    return _ENVIRONMENT.get_template(template).render(style=Markup(STYLE), script=Markup(SCRIPT), **context)

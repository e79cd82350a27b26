"""spikewatch analysis: recordings in numpy, the analyses, and the reports.

Public API (what the runner and the console call):

* ``spikewatch.analysis.reader.load(path) -> Recording`` (``.main`` / ``.sources[session]`` -> ``Source``
  with ``series[name].t/.v`` int64 arrays, ``details``/``load`` columns, ``events``, ``markers``,
  ``hellos``); ``spikewatch.analysis.reader.load_records(iterable_of_(topic, body))`` for live data.
* ``spikewatch.analysis.report.build_report(rec_or_source, ...) -> dict`` (the JSON of docs/architecture.md) and
  ``spikewatch.analysis.report.report_file(path, json_path=, html_path=)``.
* ``spikewatch.analysis.html.write_html(rec_or_source, report, path)``; ``spikewatch.analysis.terminal.render(report)``.
* ``spikewatch.analysis.failon.check(report, exprs) -> list[str]`` (failed conditions; raises FailOnError
  on a malformed one).
* ``spikewatch.analysis.downsample.minmax(t, v, buckets)`` / ``envelope_xy``: min/max per pixel column.
* ``spikewatch.analysis.record.Recorder(endpoints, path).run(duration_s)``; ``spikewatch.analysis.export.export_recording``.

Nothing here is imported by the sampler.
"""

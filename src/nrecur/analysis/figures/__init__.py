"""The figures of every analysis, drawn from its result alone (one module per analysis).

Each module's ``draw(result, folder) -> [paths]`` writes PNG and SVG files; the
analyses name it in their registration and import nothing from here, so
computing never imports matplotlib.
"""

"""The web viewer (`lab2048 view`): `data.ViewerData` reads a dataset with its annotations and
value sidecar, `app.ViewerApp` serves it as a JSON API and one static page (static/: plain
HTML, CSS and JavaScript, no build step)."""

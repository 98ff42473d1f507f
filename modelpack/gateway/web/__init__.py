"""The web page for people: ``pages`` (server-rendered HTML, no scripts) and
``static/hub.css``, its one stylesheet (package data)."""

"""The reviewer console at ``/inbox``: server-rendered pages (Jinja2), a small static script,
a JSON API on the session cookie, and the live queue as Server-Sent Events."""

"""The web console: NiceGUI pages on the platform's own FastAPI app, under ``/ui``.

Every page talks to the platform through its HTTP API (``client.ApiClient``, in process, with
the user's session), so the console can do exactly what the user's role may do and nothing
more: authorisation and tenant isolation stay decided in one place (``api/deps.need``).
Every string on a page goes through the message catalogue (``i18n.t``): English, German and
Simplified Chinese.
"""

"""Operations the CLI and the API both perform: accounts, platforms, ingest, the close, invoices,
reports. Each opens its transaction at its boundary, loads through ``repositories``, decides with
``billing`` and raises ``services.errors``; nothing here knows Click or FastAPI."""

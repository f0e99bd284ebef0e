from turnstream.cli import app

app()

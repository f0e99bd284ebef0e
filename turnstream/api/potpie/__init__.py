"""potpie-ui on turnstream (docs/potpie.md): its shapes under /potpie/api/v1, opt-in."""

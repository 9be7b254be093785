"""Demo data: a seeded synthetic population (`population`), its bulk loader (`load`), and the demo
persons' synthetic fingers (`fingers`), which the loader enrols for a sample of cards."""

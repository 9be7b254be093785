"""Demo data: a seeded synthetic population (`population`) and its bulk loader (`load`)."""

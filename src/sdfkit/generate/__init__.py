"""Universe -> facts -> doc types -> ideas -> documents, grading and the collapse loop."""

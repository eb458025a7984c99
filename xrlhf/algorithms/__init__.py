"""Pure functions for advantages, losses and KL estimators; learners compose them."""

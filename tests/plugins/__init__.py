"""A search space and a criterion registered from outside the product, as a user's own package would."""

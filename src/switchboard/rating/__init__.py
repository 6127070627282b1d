"""Pure rating: Decimal money, longest-prefix match, billing increments, connect fees."""

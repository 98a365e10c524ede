"""Compatibility imports: ``fullctl.django.*`` as the task documentation spells them."""

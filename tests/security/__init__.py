"""Security suite: the malicious corpus (fixtures/malicious) against every reading path."""

"""Regenerate `examples/welcome.csv`: 2,600 valid mobile numbers across 13 regions, plus bad rows.

Valid numbers are phonenumbers' example mobile numbers with their last digits varied, kept only when
phonenumbers still calls them valid mobiles. The bad rows cover what real lists contain: mainland China
numbers, spreadsheet damage, letters, empty cells, too short, and duplicates.

    uv run python examples/make_welcome.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

REGIONS = ["HK", "MO", "TW", "SG", "MY", "TH", "ID", "PH", "VN", "GB", "DE", "AU", "AE"]
PER_REGION = 200
FIRST_NAMES = [
    "Ada",
    "Wing",
    "Mei",
    "Arjun",
    "Siti",
    "Nok",
    "Budi",
    "Maria",
    "Linh",
    "Oliver",
    "Lena",
    "Jack",
    "Omar",
]
LANG = {"HK": "zh", "MO": "zh", "TW": "zh"}


def mobiles(region: str, count: int, rng: random.Random) -> list[str]:
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
    national = str(example.national_number)
    found: set[str] = set()
    while len(found) < count:
        tail = "".join(rng.choice("0123456789") for _ in range(4))
        candidate = phonenumbers.PhoneNumber(
            country_code=example.country_code, national_number=int(national[:-4] + tail)
        )
        if (
            phonenumbers.is_valid_number(candidate)
            and phonenumbers.number_type(candidate) == PhoneNumberType.MOBILE
        ):
            found.add(phonenumbers.format_number(candidate, PhoneNumberFormat.E164))
    return sorted(found)


def main() -> None:
    rng = random.Random(20261125)
    rows: list[dict[str, str]] = []
    for region in REGIONS:
        for number in mobiles(region, PER_REGION, rng):
            rows.append(
                {
                    "phone": number,
                    "first_name": rng.choice(FIRST_NAMES),
                    "code": f"{rng.randrange(10**5, 10**6)}",
                    "lang": LANG.get(region, "en"),
                }
            )
    rng.shuffle(rows)
    bad = [
        "+8613800138000", "+8613912345678", "008615012345678",  # mainland China: refused
        "4.47911E+11", "85291234567.0",  # spreadsheet damage
        "call me", "", "+852 1234",  # letters, empty, too short
        "+99912345678",  # no such dialing code
    ]
    for number in bad:
        rows.append({"phone": number, "first_name": "Bad", "code": "000000", "lang": "en"})
    rows.append(dict(rows[0]))  # a duplicate: the first occurrence wins
    rows.append({**rows[1], "first_name": ""})  # a second duplicate, with a missing name
    path = Path(__file__).with_name("welcome.csv")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["phone", "first_name", "code", "lang"])
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()

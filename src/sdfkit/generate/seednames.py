"""Seed names for diversity: person names drawn per document request, none over-used.

LLM-written corpora collapse onto a few names ("Sarah Chen" 439,000 times in one corpus).
Putting a few random names into each document prompt spreads them out. This module holds the
names source (first × last names within each of many cultures, so combinations stay
plausible: over 13,000 of them) and ``NamePool``, which draws deterministically from a seed
and never hands out one full name more than ``max_uses`` times in a run.

Draws are keyed: ``pool.draw(key, k)`` depends on the seed and the key (e.g. the document
slot), not on the order of calls, so a resumed or extended run gives a request the same
names it got before, and its ``custom_id`` stays the same.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from sdfkit.errors import SdfError

# culture -> (first names, last names). Written for this module; spellings are common
# romanisations. Pairing stays within a culture so that full names look like real people.
CULTURES: dict[str, tuple[str, str]] = {
    "english": (
        "Oliver Amelia Harry Isla George Ava Noah Mia Jack Grace Leo Freya Arthur Lily Oscar "
        "Evie Charlie Rosie Henry Florence Theo Poppy Alfie Ivy Edward Matilda Samuel Hazel",
        "Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson Evans "
        "Walker White Roberts Green Hall Wood Jackson Clarke Hughes Edwards Turner Hill Moore "
        "Cooper Ward Morris",
    ),
    "american": (
        "James Emma Michael Olivia William Sophia Ethan Abigail Mason Madison Logan Chloe "
        "Carter Avery Wyatt Harper Hunter Addison Brooklyn Caleb Landon Savannah Tyler Aubrey "
        "Dylan Kennedy Garrett Peyton",
        "Miller Davis Anderson Thomas Martin Harris Lewis Young Allen King Scott Baker Adams "
        "Nelson Carter Mitchell Campbell Parker Collins Stewart Morgan Reed Bell Murphy Bailey "
        "Rivera Cook Rogers",
    ),
    "german": (
        "Lukas Hannah Jonas Lea Felix Lena Maximilian Anna Paul Leonie Elias Johanna Finn "
        "Marie Tobias Katharina Moritz Franziska Jan Greta Niklas Charlotte Florian Frieda "
        "Matthias Ines Sebastian Ulrike",
        "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch "
        "Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann "
        "Lange Werner Krause Lehmann Köhler Maier",
    ),
    "french": (
        "Louis Camille Gabriel Chloé Hugo Manon Arthur Léa Jules Inès Raphaël Juliette Adam "
        "Louise Théo Zoé Nathan Margaux Antoine Clémence Mathis Élodie Baptiste Océane Rémi "
        "Solène Étienne Maëlle",
        "Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent "
        "Lefebvre Michel Garcia David Bertrand Roux Vincent Fournier Morel Girard André "
        "Mercier Dupont Lambert Bonnet Faure",
    ),
    "spanish": (
        "Alejandro Lucía Pablo Martina Daniel Sofía Álvaro Paula Javier Carmen Diego Valeria "
        "Sergio Irene Adrián Alba Jorge Claudia Raúl Noelia Iván Marta Rubén Nerea Marcos "
        "Ainhoa Gonzalo Rocío",
        "García Fernández González Rodríguez López Martínez Sánchez Pérez Gómez Martín Jiménez "
        "Ruiz Hernández Díaz Moreno Muñoz Álvarez Romero Alonso Gutiérrez Navarro Torres "
        "Domínguez Vázquez Ramos Gil Serrano Blanco",
    ),
    "italian": (
        "Lorenzo Giulia Matteo Aurora Leonardo Alice Francesco Ginevra Alessandro Beatrice "
        "Riccardo Chiara Tommaso Federica Davide Elena Gabriele Francesca Marco Silvia Andrea "
        "Valentina Stefano Ilaria Pietro Serena Nicolò Arianna",
        "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo "
        "Conti De Luca Mancini Costa Giordano Rizzo Lombardi Moretti Barbieri Fontana Santoro "
        "Mariani Rinaldi Caruso Ferrara Galli",
    ),
    "polish": (
        "Jakub Zuzanna Kacper Julia Szymon Maja Filip Hanna Mateusz Zofia Bartosz Aleksandra "
        "Wojciech Natalia Michał Wiktoria Piotr Agnieszka Krzysztof Magdalena Tomasz Katarzyna "
        "Paweł Ewa Marcin Joanna Grzegorz Dorota",
        "Nowak Kowalski Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Zieliński Szymański "
        "Woźniak Dąbrowski Kozłowski Jankowski Mazur Kwiatkowski Krawczyk Piotrowski Grabowski "
        "Nowakowski Pawłowski Michalski Król Wieczorek Jabłoński Wróbel Majewski Olszewski "
        "Stępień",
    ),
    "dutch": (
        "Daan Emma Sem Julia Lucas Tess Milan Sophie Levi Zoë Thijs Sara Jesse Fenna Bram "
        "Lotte Ruben Femke Stijn Anouk Joost Maartje Wouter Ilse Gijs Noor Pieter Sanne",
        "de Jong Jansen de Vries van den Berg van Dijk Bakker Janssen Visser Smit Meijer de "
        "Boer Mulder de Groot Bos Vos Peters Hendriks van Leeuwen Dekker Brouwer de Wit Dijkstra "
        "Smits de Graaf van der Meer Kok Jacobs de Haan",
    ),
    "nordic": (
        "Erik Astrid Lars Ingrid Nils Sigrid Magnus Freja Anders Elin Henrik Maja Johan Saga "
        "Mikkel Linnea Oskar Tuva Sindre Ida Kasper Nora Rasmus Alva Jonas Wilma Emil Signe",
        "Andersson Johansson Karlsson Nilsson Eriksson Larsson Olsen Hansen Pedersen Nielsen "
        "Jensen Lindqvist Berg Lund Holm Dahl Haugen Bakke Virtanen Korhonen Mäkinen Nieminen "
        "Sørensen Christensen Halvorsen Lindgren Ekström Nyberg",
    ),
    "russian_ukrainian": (
        "Dmitri Anastasia Alexei Yekaterina Ivan Olga Sergei Tatiana Nikolai Irina Mikhail "
        "Svetlana Andriy Oksana Bohdan Daria Yaroslav Kateryna Pavel Natalia Oleksandr Yulia "
        "Vadim Ksenia Taras Marina Roman Alina",
        "Ivanov Smirnov Kuznetsov Popov Sokolov Lebedev Kozlov Novikov Morozov Petrov Volkov "
        "Solovyov Vasiliev Zaitsev Pavlov Semenov Golubev Vinogradov Shevchenko Bondarenko "
        "Kovalenko Tkachenko Kravchenko Oliynyk Melnyk Boyko Lysenko Moroz",
    ),
    "greek_turkish": (
        "Giorgos Eleni Dimitris Maria Nikos Katerina Kostas Sofia Yannis Despina Alexandros "
        "Ioanna Mehmet Elif Emre Zeynep Burak Ayşe Murat Fatma Can Selin Kerem Deniz Ozan "
        "Ebru Serkan Gizem",
        "Papadopoulos Pappas Oikonomou Georgiou Vlachos Angelopoulos Nikolaidis Karagiannis "
        "Christodoulou Makris Alexiou Dimitriou Yılmaz Kaya Demir Şahin Çelik Yıldız Yıldırım "
        "Öztürk Aydın Özdemir Arslan Doğan Kılıç Aslan Çetin Kara",
    ),
    "arabic": (
        "Omar Layla Youssef Fatima Karim Noor Hassan Mariam Ahmed Salma Tariq Yasmin Khaled "
        "Rania Samir Hala Ibrahim Amira Faisal Dina Bilal Huda Nabil Leila Walid Reem Ziad Sana",
        "Haddad Khoury Nasser Saleh Mansour Aziz Hamdan Farouk Khalil Najjar Haddadin Qureshi "
        "Rahman Suleiman Bakr Darwish Sabbagh Masri Jaber Kassem Shami Halabi Awad Zayed "
        "Barakat Hijazi Tamimi Obeid",
    ),
    "persian": (
        "Arash Shirin Dariush Parisa Kian Mahsa Reza Nasrin Babak Leila Kaveh Azadeh Farhad "
        "Golnaz Behrouz Roya Navid Maryam Payam Sepideh Ramin Neda Shahram Bahar Omid Yasaman "
        "Cyrus Ladan",
        "Ahmadi Hosseini Karimi Rezaei Moradi Mohammadi Jafari Sadeghi Rahimi Kazemi Ghasemi "
        "Ebrahimi Najafi Zamani Hashemi Farahani Tehrani Shirazi Esfahani Bagheri Nazari "
        "Mousavi Amini Salehi Ansari Parvizi Sharifi Kamali",
    ),
    "indian": (
        "Aarav Ananya Vivaan Diya Arjun Saanvi Rohan Priya Vikram Kavya Aditya Isha Karthik "
        "Meera Rahul Neha Siddharth Pooja Nikhil Shreya Varun Lakshmi Sanjay Divya Harish "
        "Anjali Manoj Sunita",
        "Sharma Patel Singh Kumar Gupta Reddy Iyer Nair Mehta Joshi Rao Desai Chatterjee "
        "Banerjee Menon Pillai Kapoor Malhotra Verma Agarwal Mukherjee Bhat Shetty Kulkarni "
        "Pandey Mishra Saxena Chauhan",
    ),
    "chinese": (
        "Wei Xiu Ying Jun Hao Mei Lin Qiang Yan Lei Jing Tao Hui Bo Fang Jian Ling Yong Xin "
        "Zhen Ming Lan Chao Yun Peng Hong Kai Yu",
        "Wang Li Zhang Liu Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo He Gao Lin Luo Zheng "
        "Liang Xie Song Tang Han Feng Deng Cao",
    ),
    "japanese_korean": (
        "Haruto Yui Sota Hina Ren Aoi Yuto Sakura Kaito Mio Takumi Riko Daiki Nanami Minjun "
        "Seoyeon Jiho Jiwoo Hyunwoo Soyeon Dohyun Eunji Jisoo Yejin Taeyang Haeun Sungmin Minji",
        "Sato Suzuki Takahashi Tanaka Watanabe Ito Yamamoto Nakamura Kobayashi Kato Yoshida "
        "Yamada Sasaki Matsumoto Inoue Kim Lee Park Choi Jung Kang Cho Yoon Jang Lim Han Shin "
        "Oh",
    ),
    "southeast_asian": (
        "Minh Linh Anh Thao Duc Huong Tuan Lan Quang Mai Somchai Kanya Niran Malee Arief Siti "
        "Budi Dewi Rizal Putri Jose Maricel Paolo Kristine Ramon Andrea Hafiz Nurul",
        "Nguyen Tran Le Pham Hoang Phan Vu Dang Bui Do Srisuk Chaiyaporn Wongsawat Rattanakorn "
        "Santoso Wijaya Susanto Hidayat Pratama Kusuma Reyes Santos Cruz Bautista Ocampo "
        "Mendoza Abdullah Rahim",
    ),
    "african": (
        "Chidi Amara Kwame Abena Tendai Nia Oluwaseun Zainab Kofi Ama Sipho Thandiwe Jabari "
        "Wanjiru Emeka Ngozi Tunde Folake Musa Halima Themba Lerato Kagiso Ayodele Baraka "
        "Imani Mandla Zodwa",
        "Okafor Adeyemi Mensah Boateng Nkosi Dlamini Mwangi Otieno Kamau Okeke Eze Nwosu "
        "Balogun Adebayo Asante Owusu Ndlovu Khumalo Mokoena Kipchoge Achieng Banda Phiri "
        "Mutua Diallo Traoré Keita Coulibaly",
    ),
    "latin_american": (
        "Mateo Valentina Santiago Camila Sebastián Isabella Matías Daniela Nicolás Mariana "
        "Joaquín Gabriela Tomás Fernanda Emiliano Renata Thiago Luciana Rodrigo Ximena Felipe "
        "Antonella Bruno Catalina Gustavo Larissa Rafael Beatriz",
        "Silva Santos Oliveira Souza Lima Pereira Costa Ferreira Almeida Carvalho Ribeiro "
        "Rocha Castro Vargas Morales Rojas Herrera Medina Aguilar Flores Ortiz Chávez Mendoza "
        "Guerrero Salazar Cárdenas Ramírez Sandoval",
    ),
}

# Multi-word surnames (e.g. Dutch "de Jong") are joined back after the split below.
_PARTICLES = {"de", "van", "der", "den", "De"}


def _split_names(text: str) -> list[str]:
    out: list[str] = []
    pending: list[str] = []
    for word in text.split():
        if word in _PARTICLES:
            pending.append(word)
            continue
        out.append(" ".join([*pending, word]))
        pending = []
    return out


def name_table() -> dict[str, tuple[list[str], list[str]]]:
    """culture -> (first names, last names), deduplicated, in a stable order."""
    table = {}
    for culture, (firsts, lasts) in CULTURES.items():
        table[culture] = (
            list(dict.fromkeys(_split_names(firsts))),
            list(dict.fromkeys(_split_names(lasts))),
        )
    return table


def all_names() -> list[str]:
    """Every full name the source can hand out (first × last within each culture)."""
    out = []
    for firsts, lasts in name_table().values():
        out += [f"{f} {la}" for f in firsts for la in lasts]
    return list(dict.fromkeys(out))


class NamesExhausted(SdfError):
    """More names were asked for than the source holds at the configured per-name cap."""


@dataclass
class NamePool:
    """Hands out full names; none more than ``max_uses`` times over the pool's life (a run)."""

    seed: int = 0
    max_uses: int = 2
    used: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.max_uses < 1:
            raise SdfError("names: max_uses must be at least 1")
        self._table = name_table()
        self._cultures = list(self._table)
        self._capacity = len(all_names()) * self.max_uses

    @property
    def capacity(self) -> int:
        """How many draws the pool can serve in total at its cap."""
        return self._capacity

    def reserve(self, names: Iterable[str]) -> None:
        """Count names already handed out (e.g. by an earlier invocation of the same run)."""
        self.used.update(names)

    def draw(self, key: str, k: int = 3) -> list[str]:
        """``k`` distinct names for ``key``; the same key and seed give the same names when
        none of them has since reached its cap."""
        if sum(self.used.values()) + k > self._capacity:
            raise NamesExhausted(
                f"names: the source holds {self._capacity // self.max_uses:,} names and each may "
                f"be used {self.max_uses} time(s) per run; raise --name-max-uses or use fewer "
                "names per document"
            )
        digest = hashlib.sha256(f"{self.seed}\x1f{key}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        chosen: list[str] = []
        tries = 0
        while len(chosen) < k:
            tries += 1
            if tries > 100_000:  # pragma: no cover - capacity check makes this unreachable
                raise NamesExhausted("names: could not find unused names")
            firsts, lasts = self._table[rng.choice(self._cultures)]
            name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
            if name in chosen or self.used[name] >= self.max_uses:
                continue
            chosen.append(name)
        self.used.update(chosen)
        return chosen

"""Every sentence of the reports, in English and French, and numbers and dates as each language writes them.

The readers are ethics committees and data-protection officers, not engineers:
the texts say what a figure means for a patient before they say how it was
computed.  Technical details quoted from the software (check details, refusal
reasons) stay in English and are labelled as such.
"""

from __future__ import annotations

import math
import string
from datetime import date
from typing import Literal

Lang = Literal["en", "fr"]
LANGS: tuple[Lang, ...] = ("en", "fr")

NBSP = "\u00a0"

_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"),
}

def _(en: str, fr: str) -> tuple[str, str]:
    return en, fr


TEXTS: dict[str, tuple[str, str]] = {
    # ------------------------------------------------------------------ common
    "yes": _("yes", "oui"),
    "no": _("no", "non"),
    "none": _("none", "aucun"),
    "sep.list": _("; ", " ; "),
    "page": _("page {n} of {total}", "page {n} sur {total}"),
    "generated": _("generated {when} UTC", "établi le {when} UTC"),
    "software": _("flame-private {version}", "flame-private {version}"),
    "task.response": _("response model", "modèle de réponse"),
    "task.evolution": _("evolution model", "modèle d'évolution"),
    "task.segmentation": _("baseline segmentation model", "modèle de segmentation de l'IRM initiale"),
    "purpose.training": _("training (DP-SGD)", "entraînement (DP-SGD)"),
    "purpose.evaluation": _("validation metrics", "métriques de validation"),
    "technical": _("Technical detail (from the software, in English): {detail}",
                  "Détail technique (message du logiciel, en anglais) : {detail}"),
    "default_study": _("flame-private federated study of glioblastoma MRI",
                      "étude fédérée flame-private sur l'IRM du glioblastome"),
    "figure": _("Figure {n}. {caption}", "Figure {n}. {caption}"),
    # ------------------------------------------------------------------ verdicts
    "verdict.ok": _("Verdict: the records verify, the spend is within the approved budget, and only encrypted "
                   "data left the site.",
                   "Conclusion : les registres sont vérifiés, la dépense reste dans le budget approuvé et seules "
                   "des données chiffrées ont quitté le site."),
    "verdict.attention": _("Verdict: the records verify and the spend is within the approved budget, but some "
                          "points need the reader's attention:",
                          "Conclusion : les registres sont vérifiés et la dépense reste dans le budget approuvé, "
                          "mais certains points demandent l'attention du lecteur :"),
    "verdict.fail": _("VERDICT: PROBLEM FOUND. This report cannot vouch for the site's records. Do not sign off "
                     "before the problem is explained (see the integrity section):",
                     "CONCLUSION : PROBLÈME DÉTECTÉ. Ce rapport ne peut pas garantir les registres du site. Ne pas "
                     "approuver avant que le problème soit expliqué (voir la section sur l'intégrité) :"),
    "reason.ledger_broken": _("The privacy ledger does not verify: it was changed, truncated or rolled back after "
                             "it was written. No spend figure from it can be trusted.",
                             "Le registre de confidentialité ne se vérifie pas : il a été modifié, tronqué ou "
                             "restauré après son écriture. Aucun chiffre de dépense qui en est tiré n'est fiable."),
    "reason.egress_broken": _("The egress log (the record of everything the site sent) does not verify: it was "
                             "changed, truncated or rolled back after it was written.",
                             "Le journal des envois (la trace de tout ce que le site a envoyé) ne se vérifie pas : "
                             "il a été modifié, tronqué ou restauré après son écriture."),
    "reason.audit_failed.one": _("An audit check failed: {detail}.", "Un contrôle d'audit est en échec : {detail}."),
    "reason.audit_failed.many": _("Audit checks failed: {detail}.", "Des contrôles d'audit sont en échec : {detail}."),
    "reason.over_cap": _("The privacy spend is above the approved cap ({detail}).",
                        "La dépense de confidentialité dépasse le plafond approuvé ({detail})."),
    "reason.replay_mismatch": _("Recomputing epsilon from the ledger does not give the recorded values.",
                               "Le recalcul d'epsilon à partir du registre ne redonne pas les valeurs enregistrées."),
    "reason.attack_failed": _("In the attack simulation \u201c{detail}\u201d the protection did not hold.",
                             "Dans la simulation d'attaque « {detail} », la protection n'a pas tenu."),
    "reason.attack_inconclusive": _("The attack simulation \u201c{detail}\u201d is inconclusive: the attack did "
                                   "not break the unprotected control.",
                                   "La simulation d'attaque « {detail} » n'est pas concluante : l'attaque n'a pas "
                                   "réussi contre le témoin non protégé."),
    "reason.policy_not_valid": _("The approved policy does not authorise further spending today; the site refuses "
                                "every round until it is renewed.",
                                "La politique approuvée n'autorise plus de dépense aujourd'hui ; le site refuse "
                                "chaque tour jusqu'à son renouvellement."),
    "reason.audit_warnings.one": _("{detail} audit warning; see the integrity section.",
                                  "{detail} avertissement d'audit ; voir la section sur l'intégrité."),
    "reason.audit_warnings.many": _("{detail} audit warnings; see the integrity section.",
                                   "{detail} avertissements d'audit ; voir la section sur l'intégrité."),
    "reason.records_disagree": _("The records disagree on the epsilon spent ({detail}); this report uses the "
                                "largest figure.",
                                "Les registres divergent sur l'epsilon dépensé ({detail}) ; ce rapport retient le "
                                "chiffre le plus élevé."),
    "figure.recomputed": _("recomputed from the ledger", "recalculé à partir du registre"),
    "figure.ledger": _("recorded in the ledger", "inscrit au registre"),
    "figure.egress": _("recorded in the egress log with a release", "inscrit au journal des envois avec une "
                                                                    "transmission"),
    "breach.title": _("What to do now", "Que faire maintenant"),
    "breach.1": _("Do not sign off. Inform the site's data-protection officer and the coordinating centre, stop the "
                 "site's participation, and keep an untouched copy of the site's records folder.",
                 "Ne pas approuver. Informer le délégué à la protection des données du site et le centre "
                 "coordinateur, suspendre la participation du site et conserver une copie intacte du dossier des "
                 "registres du site."),
    "breach.2": _("If the records were altered, or more was released than the committee approved, this may be a "
                 "personal-data breach. Under the GDPR (article 33), the controller must notify a personal-data "
                 "breach to the supervisory authority without undue delay and, where feasible, within 72 hours of "
                 "becoming aware of it, unless it is unlikely to result in a risk to the rights and freedoms of "
                 "the persons concerned.",
                 "Si les registres ont été altérés, ou si davantage a été transmis que ce que le comité a approuvé, "
                 "il peut s'agir d'une violation de données à caractère personnel. Selon le RGPD (article 33), le "
                 "responsable du traitement notifie une telle violation à l'autorité de contrôle compétente (en "
                 "France, la CNIL) dans les meilleurs délais et, si possible, 72 heures au plus tard après en avoir "
                 "pris connaissance, à moins qu'elle ne soit pas susceptible d'engendrer un risque pour les droits "
                 "et libertés des personnes concernées."),
    "breach.3": _("Whether this is a breach is for the controller to decide, advised by the data-protection "
                 "officer; this report does not decide it. In every case, document the facts, their effects and "
                 "the action taken (article 33(5)), and keep this report.",
                 "Il revient au responsable du traitement, conseillé par le délégué à la protection des données, de "
                 "déterminer s'il s'agit d'une violation ; ce rapport ne le détermine pas. Dans tous les cas, "
                 "documenter les faits, leurs effets et les mesures prises (article 33, paragraphe 5), et conserver "
                 "ce rapport."),
    # audit check names (``flame audit`` prints them in English)
    "check.HE parameters": _("encryption parameters", "paramètres de chiffrement"),
    "check.ledger agreement": _("ledger agreement (each release against its ledger entry)",
                               "concordance avec le registre (chaque transmission face à son entrée du registre)"),
    "check.state directory": _("records folder", "dossier des registres"),
    "check.egress log": _("egress log", "journal des envois"),
    "check.privacy ledger": _("privacy ledger", "registre de confidentialité"),
    "check.budget": _("budget", "budget"),
    "check.code identity": _("code identity", "identité du code"),
    "check.outbox": _("outbox (kept copies of what was sent)", "boîte d'envoi (copies conservées de ce qui a été "
                                                              "envoyé)"),
    "check.declined": _("refusals", "refus"),
    "check.ciphertext only": _("ciphertext only", "uniquement des chiffrés"),
    "check.app approval": _("app approval (each message from an app bundle the DPO approved)",
                           "approbation de l'application (chaque message issu d'un paquet approuvé par le DPD)"),
    "check.policy history": _("policy history (the cap recorded with each release)",
                             "historique de la politique (le plafond inscrit avec chaque transmission)"),
    "check.continuity": _("continuity (the records extend those certified last time)",
                         "continuité (les registres prolongent ceux certifiés la dernière fois)"),
    "reason.no_state": _("The site's records folder does not exist: its records were lost or deleted, or the site "
                        "was never set up; what it spent and sent cannot be shown (check the site configuration, "
                        "restore the folder from backup).",
                        "Le dossier des registres du site n'existe pas : ils ont été perdus ou supprimés, ou le site "
                        "n'a jamais été initialisé ; ses dépenses et envois ne peuvent être montrés (vérifier la "
                        "configuration du site, restaurer le dossier depuis la sauvegarde)."),
    # ------------------------------------------------------------------ ethics: title
    "ethics.title": _("Privacy-budget report", "Rapport sur le budget de confidentialité"),
    "ethics.subtitle": _("for the ethics committee and the data-protection officer",
                        "à l'attention du comité d'éthique et du délégué à la protection des données"),
    "ethics.header": _("Privacy-budget report: {site}", "Rapport sur le budget de confidentialité : {site}"),
    "f.study": _("Study", "Étude"),
    "f.site": _("Site", "Site"),
    "f.committee": _("Approving committee", "Comité ayant donné l'approbation"),
    "f.reference": _("Approval reference", "Référence de l'approbation"),
    "f.generated": _("Report generated", "Rapport établi le"),
    "f.records": _("Records covered", "Registres couverts"),
    "f.records_ledger": _("privacy ledger: {n} entries", "registre de confidentialité : {n} entrées"),
    "f.records_egress": _("egress log: {n} entries", "journal des envois : {n} entrées"),
    "f.records_broken": _("{record}: DOES NOT VERIFY", "{record} : NE SE VÉRIFIE PAS"),
    "f.software": _("Software", "Logiciel"),
    "f.runs": _("Federated runs", "Exécutions fédérées"),
    "unverified": _("does not verify", "non vérifié"),
    # ------------------------------------------------------------------ ethics: at a glance
    "glance.title": _("At a glance", "En bref"),
    "glance.spent": _("Privacy budget spent (epsilon)", "Budget de confidentialité dépensé (epsilon)"),
    "glance.spent_value": _("{spent} of {cap} ({share} used)", "{spent} sur {cap} ({share} utilisé)"),
    "glance.delta": _("delta", "delta"),
    "glance.releases": _("Releases recorded", "Transmissions enregistrées"),
    "glance.messages": _("Messages sent", "Messages envoyés"),
    "glance.messages_value": _("{total} ({declined} of them refusals to take part)",
                              "{total} (dont {declined} refus de participer)"),
    "glance.ciphertexts": _("Only encrypted model data left the site", "Seules des données de modèle chiffrées ont "
                                                                      "quitté le site"),
    "glance.nothing_sent": _("nothing sent", "rien n'a été envoyé"),
    "glance.verified": _("Records verified (privacy ledger, egress log)", "Registres vérifiés (registre de "
                                                                        "confidentialité, journal des envois)"),
    "glance.attacks": _("Attack simulations", "Simulations d'attaques"),
    "glance.attacks_value": _("run: {n}; protection held: {passed}", "réalisées : {n} ; protection tenue : "
                                                                    "{passed}"),
    "glance.attacks_none": _("none attached: formal guarantee only", "aucune jointe : garantie formelle "
                                                                    "uniquement"),
    "glance.worse": _("the largest of the records' figures, which disagree", "le plus élevé des chiffres des "
                                                                            "registres, qui divergent"),
    "glance.egress_only": _("the privacy ledger DOES NOT VERIFY; the egress log records at least {eps} (cap {cap})",
                           "le registre de confidentialité NE SE VÉRIFIE PAS ; le journal des envois indique au "
                           "moins {eps} (plafond {cap})"),
    "glance.verified_yes": _("yes: the privacy ledger and the egress log verify and agree",
                            "oui : le registre de confidentialité et le journal des envois se vérifient et "
                            "concordent"),
    "glance.verified_no": _("NO: {why}", "NON : {why}"),
    "why.ledger": _("the privacy ledger does not verify", "le registre de confidentialité ne se vérifie pas"),
    "why.egress": _("the egress log does not verify", "le journal des envois ne se vérifie pas"),
    "why.figures": _("the epsilon figures disagree", "les chiffres d'epsilon divergent"),
    "why.agreement": _("a release disagrees with its ledger entry", "une transmission ne concorde pas avec son "
                                                                   "entrée du registre"),
    "glance.patients": _("Patients the budget covers", "Patients couverts par le budget"),
    "patients.value": _("{n} ({train} training, {val} validation)", "{n} ({train} en entraînement, {val} en "
                                                                    "validation)"),
    "patients.not_recorded": _("not recorded in the egress log", "non enregistré dans le journal des envois"),
    "delta.ratio": _("delta = {delta}, 1/n = 1/{n}: delta is {ratio} times smaller than 1/n.",
                    "delta = {delta}, 1/n = 1/{n} : delta est {ratio} fois plus petit que 1/n."),
    "delta.large": _("delta = {delta}, 1/n = 1/{n}: delta is NOT much smaller than 1/n. Delta bounds the "
                    "probability that the guarantee fails; it should be far below 1/n, otherwise the guarantee "
                    "tolerates one patient's data being exposed outright.",
                    "delta = {delta}, 1/n = 1/{n} : delta N'est PAS beaucoup plus petit que 1/n. Delta borne la "
                    "probabilité que la garantie ne tienne pas ; il doit être très inférieur à 1/n, faute de quoi "
                    "la garantie tolère qu'un patient soit exposé entièrement."),
    "delta.unknown": _("The number of patients is not recorded in this site's egress log (its messages were sent "
                      "before the count was recorded), so delta cannot be compared with 1/n from the records.",
                      "Le nombre de patients n'est pas enregistré dans le journal des envois du site (ses messages "
                      "ont été envoyés avant que ce nombre ne soit enregistré) ; delta ne peut donc pas être "
                      "comparé à 1/n à partir des registres."),
    "meaning.patients": _("The budget covers the site's {n} patients whose data are used ({train} for training, "
                         "{val} for validation), as recorded with each release.",
                         "Le budget couvre les {n} patients du site dont les données sont utilisées ({train} pour "
                         "l'entraînement, {val} pour la validation), tels qu'enregistrés avec chaque transmission."),
    "meaning.formal_only": _("Formal guarantee only: no attack-simulation evidence is attached to this report, so "
                            "the figures above are the mathematical bound alone, not measurements.",
                            "Garantie formelle uniquement : aucun résultat de simulation d'attaque n'est joint à ce "
                            "rapport ; les chiffres ci-dessus sont la seule borne mathématique, et non des "
                            "mesures."),
    # ------------------------------------------------------------------ ethics: policy
    "policy.title": _("The approved privacy budget", "Le budget de confidentialité approuvé"),
    "policy.intro": _("The ethics committee approved a total privacy budget for this site's patients. It bounds "
                     "everything ever released from their data: both models, every round and every run together. "
                     "Before each release the site checks that the policy is valid and that the release keeps the "
                     "total within the cap; otherwise it refuses to take part, and the federation goes on without it.",
                     "Le comité d'éthique a approuvé un budget de confidentialité total pour les patients de ce "
                     "site. Il borne tout ce qui est transmis à partir de leurs données : les deux modèles, tous les "
                     "tours et toutes les exécutions ensemble. Avant chaque transmission, le site vérifie que la "
                     "politique est en vigueur et que la transmission maintient le total sous le plafond ; sinon il "
                     "refuse de participer, et la fédération continue sans lui."),
    "policy.cap": _("Total budget (epsilon cap)", "Budget total (plafond d'epsilon)"),
    "policy.delta": _("delta (probability the bound may fail)", "delta (probabilité que la borne ne tienne pas)"),
    "policy.unit": _("Unit of privacy", "Unité de confidentialité"),
    "policy.unit_patient": _("the patient: all scans and timepoints of one patient form one record",
                            "le patient : tous les examens et toutes les dates d'un patient forment un seul "
                            "enregistrement"),
    "policy.accountant": _("Accountant (how releases are composed)", "Méthode de comptabilité (composition des "
                                                                    "transmissions)"),
    "policy.approved_on": _("Applies from", "En vigueur à partir du"),
    "policy.expires_on": _("No longer applies from", "N'est plus en vigueur à partir du"),
    "policy.status": _("Status today", "Statut aujourd'hui"),
    "policy.valid": _("valid: the site may spend within the cap", "en vigueur : le site peut dépenser dans la "
                                                                 "limite du plafond"),
    "policy.invalid": _("NOT VALID: the site refuses every round", "NON EN VIGUEUR : le site refuse chaque tour"),
    "policy.notes": _("Notes", "Remarques"),
    "policy.file": _("Policy file", "Fichier de la politique"),
    "policy.cap_history": _("Cap recorded with each release (ledger entries)",
                            "Plafond enregistré avec chaque dépense (entrées du registre)"),
    "policy.cap_stretch": _("{first}-{last}: {cap} ({ref})", "{first}-{last} : {cap} ({ref})"),
    "policy.cap_unknown": _("not recorded", "non enregistré"),
    "accountant.prv": _("PRV (privacy random variables, Opacus; the tighter of the two)",
                       "PRV (variables aléatoires de confidentialité, Opacus ; la plus précise des deux)"),
    "accountant.rdp": _("RDP (Rényi differential privacy, Opacus)", "RDP (confidentialité différentielle de Rényi, "
                                                                   "Opacus)"),
    # ------------------------------------------------------------------ ethics: spend
    "spend.title": _("Privacy spent so far", "Budget dépensé à ce jour"),
    "spend.intro": _("Each time a model update or a validation summary computed from the site's patients leaves the "
                    "site, its privacy cost is first written to the site's privacy ledger. The table lists every "
                    "entry. \u201cEpsilon after\u201d is the site's total after that entry, combined with all "
                    "earlier ones: costs combine, but not by simple addition.",
                    "Chaque fois qu'une mise à jour de modèle ou un résumé de validation calculé à partir des "
                    "patients du site quitte le site, son coût en confidentialité est d'abord inscrit dans le "
                    "registre de confidentialité du site. Le tableau en donne chaque entrée. « Epsilon après » est "
                    "le total du site après cette entrée, combinée avec toutes les précédentes : les coûts se "
                    "combinent, mais pas par simple addition."),
    "spend.replayed": _("For this report every value was recomputed from the ledger with the {accountant} "
                       "accountant of the Opacus library, and agrees with the recorded value.",
                       "Pour ce rapport, chaque valeur a été recalculée à partir du registre avec la méthode "
                       "{accountant} de la bibliothèque Opacus, et concorde avec la valeur enregistrée."),
    "spend.replay_bad": _("Recomputing the values from the ledger does NOT give the recorded values (see the "
                         "column \u201crecomputed\u201d).",
                         "Le recalcul des valeurs à partir du registre NE redonne PAS les valeurs enregistrées "
                         "(voir la colonne « recalculé »)."),
    "spend.total": _("Total at the policy's delta: epsilon = {spent} of the approved {cap} ({share} of the budget); "
                    "{remaining} remains.",
                    "Total au delta de la politique : epsilon = {spent} sur les {cap} approuvés ({share} du "
                    "budget) ; il reste {remaining}."),
    "spend.disagree": _("The records disagree on the site's total: {figures}. This report uses the largest, "
                       "{worst}: spend is never under-counted.",
                       "Les registres divergent sur le total du site : {figures}. Ce rapport retient le plus élevé, "
                       "{worst} : la dépense n'est jamais sous-estimée."),
    "spend.empty": _("Nothing has been recorded: no data computed from this site's patients has been released.",
                    "Rien n'a été enregistré : aucune donnée calculée à partir des patients de ce site n'a été "
                    "transmise."),
    "spend.broken": _("The privacy ledger does not verify, so its figures are not shown: they cannot be trusted.",
                     "Le registre de confidentialité ne se vérifie pas ; ses chiffres ne sont donc pas présentés : "
                     "ils ne sont pas fiables."),
    "spend.unsent": _("\u201cSent: no\u201d marks spend recorded for a release that never left (e.g. the round "
                     "failed after training). It still counts: the budget over-counts, never under-counts.",
                     "« Envoyé : non » signale une dépense enregistrée pour une transmission qui n'est jamais partie "
                     "(par exemple, le tour a échoué après l'entraînement). Elle est tout de même comptée : le "
                     "budget est surestimé, jamais sous-estimé."),
    "col.seq": _("#", "n°"),
    "col.date": _("Date (UTC)", "Date (UTC)"),
    "col.run": _("Run", "Exécution"),
    "col.model": _("Model", "Modèle"),
    "col.round": _("Round", "Tour"),
    "col.purpose": _("Purpose", "Objet"),
    "col.eps_after": _("Epsilon after", "Epsilon après"),
    "col.eps_replayed": _("Recomputed", "Recalculé"),
    "col.sent": _("Sent", "Envoyé"),
    "fig.spend": _("The site's total epsilon after each release, by federated round and date, against the "
                  "approved cap (dashed line); the shaded band is the budget that remains.",
                  "Epsilon total du site après chaque transmission, par tour fédéré et par date, comparé au plafond "
                  "approuvé (tirets) ; la bande ombrée est le budget restant."),
    "plot.round_axis": _("federated round (date, UTC)", "tour fédéré (date, UTC)"),
    "plot.round_tick": _("round {round}\n{date}", "tour {round}\n{date}"),
    "plot.remaining": _("remaining budget", "budget restant"),
    "plot.over": _("above the cap", "au-delà du plafond"),
    "plot.epsilon": _("total epsilon", "epsilon total"),
    "plot.cap": _("approved cap {cap}", "plafond approuvé {cap}"),
    "plot.training": _("training (DP-SGD)", "entraînement (DP-SGD)"),
    "plot.evaluation": _("validation metrics", "métriques de validation"),
    # ------------------------------------------------------------------ ethics: mechanism
    "mech.title": _("How the patients' data were protected", "Comment les données des patients ont été protégées"),
    "mech.intro": _("Training uses DP-SGD (differentially private stochastic gradient descent). At each step every "
                   "patient is included at random with probability q (the sampling rate); each patient's "
                   "influence on the update is limited to a fixed size C (the clipping norm); then random noise "
                   "of size \u03c3 \u00d7 C is added (\u03c3 is the noise multiplier). Validation summaries are "
                   "released the same way: each patient's contribution is bounded and noise is added. Every "
                   "release is combined into one (epsilon, delta) by the {accountant} accountant of the Opacus "
                   "library, at delta = {delta}.",
                   "L'entraînement utilise DP-SGD (descente de gradient stochastique à confidentialité "
                   "différentielle). À chaque étape, chaque patient est inclus au hasard avec une probabilité q "
                   "(le taux d'échantillonnage) ; l'influence de chaque patient sur la mise à jour est limitée à "
                   "une taille fixe C (la norme d'écrêtage) ; puis un bruit aléatoire d'amplitude \u03c3 \u00d7 C "
                   "est ajouté (\u03c3 est le multiplicateur de bruit). Les résumés de validation sont transmis de "
                   "la même manière : la contribution de chaque patient est bornée et du bruit est ajouté. Toutes "
                   "les transmissions sont combinées en un seul (epsilon, delta) par la méthode {accountant} de la "
                   "bibliothèque Opacus, à delta = {delta}."),
    "col.sigma": _("Noise multiplier \u03c3", "Multiplicateur de bruit \u03c3"),
    "col.q": _("Sampling rate q", "Taux d'échantillonnage q"),
    "col.clip": _("Clipping norm C", "Norme d'écrêtage C"),
    "col.releases": _("Releases", "Transmissions"),
    "col.steps": _("Noisy steps (total)", "Étapes bruitées (total)"),
    # ------------------------------------------------------------------ ethics: meaning
    "meaning.title": _("What this means for one patient", "Ce que cela signifie pour un patient"),
    "meaning.intro": _("The guarantee answers one question: was a given patient's data used? Anyone who sees "
                      "everything this site released (a curious server, another site, a reader of the published "
                      "models) can tell only a little better than chance whether that patient took part. \u201cA "
                      "little\u201d is set by epsilon: the smaller, the stronger the protection.",
                      "La garantie répond à une question : les données d'un patient donné ont-elles été "
                      "utilisées ? Quiconque voit tout ce que ce site a transmis (un serveur curieux, un autre site, "
                      "un lecteur des modèles publiés) ne peut le dire qu'un peu mieux que le hasard. Ce « un peu » "
                      "est fixé par epsilon : plus il est petit, plus la protection est forte."),
    "meaning.sentence": _("With epsilon = {eps} and delta = {delta}: an attacker who wrongly accuses at most 1 in "
                         "100 non-participants of having been in the study can correctly identify at most {x} in "
                         "100 participants. At the approved cap (epsilon = {cap}) it would be at most {xcap} in "
                         "100.",
                         "Avec epsilon = {eps} et delta = {delta} : un attaquant qui accuse à tort au plus 1 "
                         "non-participant sur 100 d'avoir fait partie de l'étude peut identifier correctement au "
                         "plus {x} participants sur 100. Au plafond approuvé (epsilon = {cap}), ce serait au plus "
                         "{xcap} sur 100."),
    "meaning.odds": _("Put another way: whatever an observer believed beforehand about whether a patient took part, "
                     "seeing every release can multiply the odds of that belief by at most {factor} (e to the power "
                     "epsilon), except with probability delta.",
                     "Autrement dit : quoi qu'un observateur ait cru au départ sur la participation d'un patient, "
                     "voir toutes les transmissions peut multiplier la cote de cette croyance par au plus {factor} "
                     "(e à la puissance epsilon), sauf avec une probabilité delta."),
    "meaning.weak": _("At this level the formal bound is weak for an attacker who accepts 1 false accusation in 100; "
                     "it says more about attackers that must almost never be wrong (table below). It is a "
                     "worst case over all possible attackers; the attack simulations measure what real attacks "
                     "achieve.",
                     "À ce niveau, la borne formelle est faible pour un attaquant qui accepte 1 fausse accusation "
                     "sur 100 ; elle en dit davantage sur les attaquants qui ne doivent presque jamais se tromper "
                     "(tableau ci-dessous). C'est un pire cas sur tous les attaquants possibles ; les simulations "
                     "d'attaques mesurent ce que des attaques réelles obtiennent."),
    "meaning.strong": _("This is a worst case over all possible attackers; the attack simulations measure what "
                       "real attacks achieve.",
                       "C'est un pire cas sur tous les attaquants possibles ; les simulations d'attaques mesurent "
                       "ce que des attaques réelles obtiennent."),
    "meaning.col_fpr": _("Non-participants wrongly accused (at most)", "Non-participants accusés à tort (au plus)"),
    "meaning.col_spent": _("Participants identified, at most: spent so far (epsilon {eps})",
                          "Participants identifiés, au plus : dépense actuelle (epsilon {eps})"),
    "meaning.col_cap": _("... at the approved cap (epsilon {eps})", "... au plafond approuvé (epsilon {eps})"),
    "meaning.rate": _("1 in {n}", "1 sur {n}"),
    "meaning.per100": _("{x} in 100", "{x} sur 100"),
    "meaning.cannot": _("What an attacker cannot learn", "Ce qu'un attaquant ne peut pas apprendre"),
    "meaning.cannot.1": _("whether a given patient took part, beyond the bound above;",
                         "si un patient donné a participé, au-delà de la borne ci-dessus ;"),
    "meaning.cannot.2": _("any patient's images, segmentations, labels or clinical data: they never leave the site;",
                         "les images, segmentations, étiquettes ou données cliniques d'un patient : elles ne "
                         "quittent jamais le site ;"),
    "meaning.cannot.3": _("the site's own model update: the server only ever holds it encrypted (the limits are "
                         "stated in the threat-model section).",
                         "la mise à jour de modèle du site : le serveur ne la détient jamais que chiffrée (les "
                         "limites sont indiquées dans la section sur le modèle de menace)."),
    "meaning.can": _("What can be learned", "Ce qui peut être appris"),
    "meaning.can.1": _("what the models learn about patients in general (for example how tumours respond to each "
                      "radiotherapy modality): this is the purpose of the study, and it applies to participants "
                      "and non-participants alike;",
                      "ce que les modèles apprennent sur les patients en général (par exemple comment les tumeurs "
                      "répondent à chaque modalité de radiothérapie) : c'est l'objet de l'étude, et cela vaut pour "
                      "les participants comme pour les non-participants ;"),
    "meaning.can.2": _("that the site took part, when, and how much it sent (sizes and timing), but not the content.",
                      "que le site a participé, quand, et combien il a envoyé (tailles et horaires), mais pas le "
                      "contenu."),
    # ------------------------------------------------------------------ ethics: egress
    "egress.title": _("What left the site", "Ce qui a quitté le site"),
    "egress.intro": _("Every message the site sent is written, before it is sent, to the site's egress log, and the "
                     "exact bytes are kept in the site's outbox. For this report every record was checked: the "
                     "log's hash chain, each kept message against its recorded size and SHA-256 fingerprint, and "
                     "each model update and metrics message against the agreed encryption parameters.",
                     "Chaque message envoyé par le site est inscrit, avant l'envoi, dans le journal des envois du "
                     "site, et ses octets exacts sont conservés dans la boîte d'envoi du site. Pour ce rapport, "
                     "chaque trace a été contrôlée : la chaîne de hachage du journal, chaque message conservé par "
                     "rapport à sa taille et à son empreinte SHA-256 enregistrées, et chaque mise à jour de modèle "
                     "et message de métriques par rapport aux paramètres de chiffrement convenus."),
    "egress.broken": _("The egress log does not verify: the list of what left the site cannot be trusted.",
                      "Le journal des envois ne se vérifie pas : la liste de ce qui a quitté le site n'est pas "
                      "fiable."),
    "col.kind": _("Kind of message", "Type de message"),
    "col.messages": _("Messages", "Messages"),
    "col.bytes": _("Bytes", "Octets"),
    "col.content": _("Content", "Contenu"),
    "kind.update": _("model update", "mise à jour de modèle"),
    "kind.metrics": _("validation metrics", "métriques de validation"),
    "kind.declined": _("refusal to take part", "refus de participer"),
    "kind.finished": _("end of run", "fin d'une exécution"),
    "content.update": _("encrypted (CKKS) model weights and patient count", "poids du modèle et nombre de patients, "
                                                                           "chiffrés (CKKS)"),
    "content.metrics": _("encrypted (CKKS) sums of metrics, with DP noise", "sommes de métriques chiffrées (CKKS), "
                                                                           "avec bruit DP"),
    "content.declined": _("a short status saying only \u201cdeclined\u201d: no reason, no data",
                          "un court statut disant seulement « refusé » : ni motif, ni donnée"),
    "content.finished": _("a short status saying only \u201cok\u201d: the final model was received",
                          "un court statut disant seulement « ok » : le modèle final a été reçu"),
    "egress.total": _("total", "total"),
    "egress.ciphertexts": _("Every model update and metrics message was a ciphertext of the agreed parameters",
                           "Chaque mise à jour de modèle et message de métriques était un chiffré des paramètres "
                           "convenus"),
    "egress.chain": _("Egress log hash chain verified", "Chaîne de hachage du journal des envois vérifiée"),
    "egress.period": _("First and last message (UTC)", "Premier et dernier message (UTC)"),
    "egress.fingerprint": _("Encryption parameters fingerprint", "Empreinte des paramètres de chiffrement"),
    "egress.transport": _("How the messages travelled (as recorded)", "Mode de transport des messages (tel "
                                                                     "qu'enregistré)"),
    "transport.simulation": _("Flower simulation on one machine (no network, so no TLS)",
                             "simulation Flower sur une seule machine (pas de réseau, donc pas de TLS)"),
    "transport.in-process": _("in one process, for a test or an attack simulation (no network, so no TLS)",
                             "dans un seul processus, pour un test ou une simulation d'attaque (pas de réseau, donc "
                             "pas de TLS)"),
    "transport.supernode": _("over the network through the site's Flower SuperNode; TLS not declared in its "
                            "configuration",
                            "par le réseau, via le SuperNode Flower du site ; TLS non déclaré dans sa configuration"),
    "transport.supernode-tls": _("over the network through the site's Flower SuperNode, inside TLS (as declared "
                                "in its configuration)",
                                "par le réseau, via le SuperNode Flower du site, dans TLS (selon sa configuration "
                                "déclarée)"),
    "transport.not-recorded": _("not recorded (logged before the transport was recorded)",
                               "non enregistré (consigné avant que le mode de transport ne soit enregistré)"),
    "transport.none": _("nothing sent", "rien n'a été envoyé"),
    "transport.count": _("{how}: {messages}", "{how} : {messages}"),
    "messages.one": _("{n} message", "{n} message"),
    "messages.many": _("{n} messages", "{n} messages"),
    "egress.participation": _("Rounds taken part in", "Tours auxquels le site a participé"),
    "col.rounds_sent": _("Rounds with an update sent", "Tours avec mise à jour envoyée"),
    "col.rounds_declined": _("Rounds declined", "Tours refusés"),
    "egress.declined": _("Refusals to take part", "Refus de participer"),
    "egress.declined_intro": _("The site refused these rounds. It told the server only that it declined; the "
                              "reasons below stayed at the site:",
                              "Le site a refusé ces tours. Il a seulement indiqué au serveur qu'il refusait ; les "
                              "motifs ci-dessous sont restés au site :"),
    "col.reason": _("Reason (from the software, in English)", "Motif (message du logiciel, en anglais)"),
    "egress.never": _("What never left the site", "Ce qui n'a jamais quitté le site"),
    "egress.never.1": _("MRI scans (T1, T1ce, T2, FLAIR) and tumour segmentations;",
                       "les examens IRM (T1, T1ce, T2, FLAIR) et les segmentations de tumeur ;"),
    "egress.never.2": _("labels and clinical data (response, age, sex, MGMT status, extent of resection);",
                       "les étiquettes et données cliniques (réponse, âge, sexe, statut MGMT, étendue de la "
                       "résection) ;"),
    "egress.never.3": _("model weights, gradients or metrics in readable form: only their encrypted (CKKS) form;",
                       "les poids, gradients ou métriques de modèle sous forme lisible : seulement leur forme "
                       "chiffrée (CKKS) ;"),
    "egress.never.4": _("anything about an individual patient: counts travel only as totals, inside ciphertexts.",
                       "quoi que ce soit sur un patient individuel : les effectifs ne circulent que sous forme de "
                       "totaux, à l'intérieur des chiffrés."),
    # ------------------------------------------------------------------ ethics: attacks
    "attacks.title": _("Evidence from attack simulations", "Résultats des simulations d'attaques"),
    "attacks.intro": _("Each simulation runs a known attack on the same data at least twice: once with the "
                      "protection switched off (the control: the attack must succeed there, otherwise the test "
                      "proves nothing) and once with it on (the attack must then fail).",
                      "Chaque simulation exécute une attaque connue au moins deux fois sur les mêmes données : une "
                      "fois sans la protection (le témoin : l'attaque doit y réussir, sinon le test ne prouve "
                      "rien) et une fois avec (l'attaque doit alors échouer)."),
    "attacks.none": _("No attack simulation was run for this report. This is not a sign of a problem: the report "
                     "then rests on the formal guarantee and on the verified records alone.",
                     "Aucune simulation d'attaque n'a été réalisée pour ce rapport. Ce n'est pas le signe d'un "
                     "problème : le rapport repose alors sur la seule garantie formelle et sur les registres "
                     "vérifiés."),
    "attacks.none_in": _("No attack results were found in {folder}.", "Aucun résultat d'attaque n'a été trouvé "
                                                                       "dans {folder}."),
    "attack.passed": _("Protection held: the attack broke the unprotected control and failed against the "
                      "protection.",
                      "La protection a tenu : l'attaque a réussi contre le témoin non protégé et a échoué contre "
                      "la protection."),
    "attack.inconclusive": _("Inconclusive: the attack did not break the unprotected control, so its failure "
                            "against the protection proves nothing.",
                            "Non concluant : l'attaque n'a pas réussi contre le témoin non protégé ; son échec "
                            "contre la protection ne prouve donc rien."),
    "attack.failed": _("PROTECTION DID NOT HOLD: the attack succeeded with the protection on.",
                      "LA PROTECTION N'A PAS TENU : l'attaque a réussi avec la protection active."),
    "col.arm": _("Condition", "Condition"),
    "col.protection": _("Protection", "Protection"),
    "col.control": _("Control", "Témoin"),
    "col.succeeded": _("Attack succeeded", "Attaque réussie"),
    "col.metrics": _("Key measurements", "Mesures principales"),
    "protection.none": _("none", "aucune"),
    "protection.dp": _("DP", "DP"),
    "protection.he": _("encryption", "chiffrement"),
    "protection.dp+he": _("DP + encryption", "DP + chiffrement"),
    "protection.broken-dp": _("deliberately broken DP", "DP volontairement défaillante"),
    "attack.epsilon": _("Epsilon the accountant claims for the protection tested: {eps}.",
                       "Epsilon revendiqué par la comptabilité pour la protection testée : {eps}."),
    "attack.settings": _("Run: seed {seed}, size \u201c{size}\u201d, {seconds} s; result file {source}.",
                        "Exécution : graine {seed}, taille « {size} », {seconds} s ; fichier de résultat {source}."),
    "attack.figure_missing": _("Figure {name} is named by the result but missing.",
                              "La figure {name} est citée par le résultat mais absente."),
    "attack.summary_note": _("The summary below is the attack's own text (in English).",
                            "Le résumé ci-dessous est le texte de la simulation (en anglais)."),
    # ------------------------------------------------------------------ threat model
    "threat.title": _("The threat model and its stated limits", "Le modèle de menace et ses limites déclarées"),
    "threat.parties": _("Who is involved", "Les parties"),
    "threat.party.1": _("Sites (at least 3 hospitals) hold their patients' MRI. Each trains locally, spends its own "
                       "privacy budget, encrypts what it sends and decrypts the combined model it receives.",
                       "Les sites (au moins 3 hôpitaux) détiennent l'IRM de leurs patients. Chacun entraîne "
                       "localement, dépense son propre budget de confidentialité, chiffre ce qu'il envoie et "
                       "déchiffre le modèle combiné qu'il reçoit."),
    "threat.party.2": _("The aggregation server adds the encrypted updates together and relays the result. It "
                       "holds no decryption key at all.",
                       "Le serveur d'agrégation additionne les mises à jour chiffrées et relaie le résultat. Il ne "
                       "détient aucune clé de déchiffrement."),
    "threat.party.3": _("The key custodian (for example the coordinating centre's data-protection officer) creates "
                       "the encryption key once and hands it to each site directly.",
                       "Le dépositaire des clés (par exemple le délégué à la protection des données du centre "
                       "coordinateur) crée la clé de chiffrement une seule fois et la remet directement à chaque "
                       "site."),
    "threat.guarantees": _("What is guaranteed", "Ce qui est garanti"),
    "threat.g.1": _("A curious server, which follows the protocol but examines everything it receives, sees only "
                   "encrypted data, its size and timing, and which sites took part. It learns no site's update, no "
                   "combined model and no metric.",
                   "Un serveur curieux, qui suit le protocole mais examine tout ce qu'il reçoit, ne voit que des "
                   "données chiffrées, leur taille, leurs horaires et quels sites ont participé. Il n'apprend "
                   "aucune mise à jour de site, aucun modèle combiné et aucune métrique."),
    "threat.g.2": _("Every patient at every site is protected by that site's (epsilon, delta), including in the "
                   "models the sites publish and in anything another site learns from the combined result.",
                   "Chaque patient de chaque site est protégé par le (epsilon, delta) de son site, y compris dans "
                   "les modèles que les sites publient et dans tout ce qu'un autre site apprend du résultat "
                   "combiné."),
    "threat.g.3.tls": _("Between the site and the server, the encrypted data also travelled inside TLS (as "
                       "declared in the configuration of the site's SuperNode).",
                       "Entre le site et le serveur, les données chiffrées ont en outre circulé dans TLS (selon la "
                       "configuration déclarée du SuperNode du site)."),
    "threat.g.3.other": _("How this site's messages travelled to the server, as its egress log records it: {how}. "
                         "A site that connects through a SuperNode configured as documented sends its encrypted "
                         "data inside TLS as well.",
                         "Mode de transport des messages de ce site vers le serveur, tel que son journal des envois "
                         "l'enregistre : {how}. Un site qui se connecte par un SuperNode configuré comme documenté "
                         "envoie en outre ses données chiffrées dans TLS."),
    "threat.limits": _("Stated limits", "Limites déclarées"),
    "threat.l.1": _("All sites share one encryption key. A server colluding with one site could decrypt every "
                   "site's update. Differential privacy still bounds what that reveals about any one patient.",
                   "Tous les sites partagent une même clé de chiffrement. Un serveur de connivence avec un site "
                   "pourrait déchiffrer la mise à jour de chaque site. La confidentialité différentielle borne "
                   "toujours ce que cela révèle sur un patient."),
    "threat.l.2": _("With only 2 sites, each could work out the other's update from the sum. Rounds therefore need "
                   "at least 3 contributing sites, and fewer is refused.",
                   "Avec seulement 2 sites, chacun pourrait déduire la mise à jour de l'autre à partir de la "
                   "somme. Chaque tour exige donc au moins 3 sites contributeurs, et un nombre inférieur est "
                   "refusé."),
    "threat.l.3": _("A server that breaks the protocol could send one site's encrypted update back as \u201cthe "
                   "combined model\u201d, so that the sites decrypt it. Differential privacy bounds what this "
                   "reveals about any one patient.",
                   "Un serveur qui enfreint le protocole pourrait renvoyer la mise à jour chiffrée d'un site comme "
                   "« le modèle combiné », pour que les sites la déchiffrent. La confidentialité différentielle "
                   "borne ce que cela révèle sur un patient."),
    "threat.l.4": _("This version has no defence against a site that deliberately sends a harmful (poisoned) "
                   "update to degrade the models.",
                   "Cette version n'offre aucune défense contre un site qui enverrait délibérément une mise à "
                   "jour nuisible (empoisonnée) pour dégrader les modèles."),
    "threat.l.5": _("The records show what the site's own software sent; they cannot show what a compromised "
                   "computer might send by other means. Network controls are the complement.",
                   "Les registres montrent ce que le logiciel du site a envoyé ; ils ne peuvent pas montrer ce "
                   "qu'un ordinateur compromis enverrait par d'autres moyens. Les contrôles réseau en sont le "
                   "complément."),
    "threat.l.6": _("Anyone with write access to the site's records could rebuild them entirely. The chain heads "
                   "below, written in the committee's minutes, detect this.",
                   "Quiconque a un accès en écriture aux registres du site pourrait les reconstruire entièrement. "
                   "Les têtes de chaîne ci-dessous, consignées au procès-verbal du comité, permettent de le "
                   "détecter."),
    "threat.l.7": _("The number of patients a site trains on is not hidden. The other sites see the total across "
                   "sites, so sites working together can work out one site's number, and the server can estimate it "
                   "from how long the site takes. It is treated as public; no patient's data depend on it.",
                   "Le nombre de patients sur lequel un site s'entraîne n'est pas caché. Les autres sites voient le "
                   "total, si bien que des sites associés peuvent en déduire le nombre d'un site, et le serveur "
                   "peut l'estimer d'après la durée de ses calculs. Il est considéré comme public ; aucune donnée "
                   "de patient n'en dépend."),
    # ------------------------------------------------------------------ integrity
    "integrity.title": _("Integrity of the records", "Intégrité des registres"),
    "integrity.intro": _("The privacy ledger and the egress log are hash chains: each entry contains the SHA-256 "
                        "fingerprint of the one before it, so changing, removing or reordering any entry is "
                        "detected. Write the two heads below in the minutes. A later report must show the same "
                        "fingerprint at the same count, with any new entries after it; otherwise the records were "
                        "rewritten.",
                        "Le registre de confidentialité et le journal des envois sont des chaînes de hachage : "
                        "chaque entrée contient l'empreinte SHA-256 de la précédente, de sorte que toute "
                        "modification, suppression ou permutation d'une entrée est détectée. Consigner les deux "
                        "têtes ci-dessous au procès-verbal. Un rapport ultérieur doit montrer la même empreinte au "
                        "même rang, suivie des éventuelles nouvelles entrées ; sinon les registres ont été "
                        "réécrits."),
    "col.record": _("Record", "Registre"),
    "col.verified": _("Verified", "Vérifié"),
    "col.entries": _("Entries", "Entrées"),
    "col.head": _("Head fingerprint (first 20 of the 64 hex digits of the last entry's SHA-256, to read aloud)",
                 "Empreinte de la tête (20 premiers des 64 chiffres hexadécimaux du SHA-256 de la dernière entrée, "
                 "à lire à voix haute)"),
    "integrity.full": _("Full heads (entries and SHA-256), to compare with the hash field of the record files:",
                       "Têtes complètes (entrées et SHA-256), à comparer avec le champ hash des fichiers de "
                       "registre :"),
    "record.ledger": _("privacy ledger", "registre de confidentialité"),
    "record.egress": _("egress log", "journal des envois"),
    "integrity.failed": _("{record} DOES NOT VERIFY.", "{record} : NE SE VÉRIFIE PAS."),
    "integrity.checks": _("Checks run for this report", "Contrôles effectués pour ce rapport"),
    "col.check": _("Check", "Contrôle"),
    "col.result": _("Result", "Résultat"),
    "col.detail": _("Detail (from the software, in English)", "Détail (message du logiciel, en anglais)"),
    "severity.pass": _("pass", "réussi"),
    "severity.warning": _("warning", "avertissement"),
    "severity.fail": _("FAIL", "ÉCHEC"),
    "integrity.code": _("Code identity: the software that produced the messages. Compare each value with the "
                       "release that was approved.",
                       "Identité du code : le logiciel qui a produit les messages. Comparer chaque valeur avec la "
                       "version approuvée."),
    "col.app_hash": _("App hash", "Empreinte du logiciel"),
    "col.seqs": _("Messages (seq)", "Messages (n°)"),
    "col.installed": _("Installed here", "Installé ici"),
    # ------------------------------------------------------------------ sign-off
    "sign.title": _("Sign-off", "Approbation"),
    "sign.intro": _("We have reviewed this privacy-budget report for {site}, covering the privacy ledger up to "
                   "entry {count} (head {head}).",
                   "Nous avons examiné ce rapport sur le budget de confidentialité concernant {site}, couvrant le "
                   "registre de confidentialité jusqu'à l'entrée {count} (tête {head})."),
    "sign.decision": _("Decision:", "Décision :"),
    "sign.d.1": _("noted without remarks", "pris acte sans remarque"),
    "sign.d.2": _("noted with the remarks below", "pris acte avec les remarques ci-dessous"),
    "sign.d.3": _("further information requested", "informations complémentaires demandées"),
    "sign.remarks": _("Remarks:", "Remarques :"),
    "sign.name": _("Name", "Nom"),
    "sign.role": _("Role", "Fonction"),
    "sign.date": _("Date", "Date"),
    "sign.signature": _("Signature", "Signature"),
    "sign.role_of": _("{role}: {name}", "{role} : {name}"),
    "role.chair": _("Chair of the ethics committee", "Président(e) du comité d'éthique"),
    "role.dpo": _("Data-protection officer", "Délégué(e) à la protection des données"),
    "role.pi": _("Principal investigator", "Investigateur(trice) principal(e)"),
    "role.coordinator": _("Coordinating centre", "Centre coordinateur"),
    # ------------------------------------------------------------------ consortium
    "cons.title": _("Consortium privacy-budget overview", "Vue d'ensemble des budgets de confidentialité du "
                                                         "consortium"),
    "cons.subtitle": _("every site's spend against the budget its own committee approved",
                      "la dépense de chaque site comparée au budget approuvé par son propre comité"),
    "cons.header": _("Consortium privacy-budget overview", "Budgets de confidentialité du consortium"),
    "cons.sites": _("Sites", "Sites"),
    "cons.intro": _("Each site has its own budget, approved by its own committee. Budgets are not pooled: a patient "
                   "at one site is protected by that site's budget, whatever the others spend. \u201cRounds "
                   "taken part in\u201d counts the rounds of a model for which the site sent an encrypted update; "
                   "\u201cdeclined\u201d counts the rounds it refused (its budget would pass the cap, its policy "
                   "is not valid, ...), as recorded with the reason in its egress log. Rounds the server refused "
                   "to combine (fewer than 3 sites) are not visible to the sites and are not counted here.",
                   "Chaque site a son propre budget, approuvé par son propre comité. Les budgets ne sont pas mis "
                   "en commun : un patient d'un site est protégé par le budget de ce site, quoi que dépensent les "
                   "autres. « Tours auxquels le site a participé » compte les tours d'un modèle pour lesquels le "
                   "site a envoyé une mise à jour chiffrée ; « refusés » compte les tours qu'il a refusés (son "
                   "budget dépasserait le plafond, sa politique n'est pas en vigueur, ...), tels qu'enregistrés "
                   "avec leur motif dans son journal des envois. Les tours que le serveur a refusé de combiner "
                   "(moins de 3 sites) ne sont pas visibles des sites et ne sont pas comptés ici."),
    "col.committee": _("Committee (reference)", "Comité (référence)"),
    "col.spent_cap": _("Epsilon spent / cap", "Epsilon dépensé / plafond"),
    "col.used": _("Used", "Utilisé"),
    "col.taken_part": _("Rounds taken part in", "Tours avec participation"),
    "col.declined": _("Declined", "Refusés"),
    "col.records_ok": _("Records verified", "Registres vérifiés"),
    "col.verdict": _("Verdict", "Conclusion"),
    "col.expires": _("Policy applies until (last day, inclusive)", "Politique en vigueur jusqu'au (inclus)"),
    "level.ok": _("ok", "conforme"),
    "level.attention": _("attention", "à examiner"),
    "level.fail": _("PROBLEM", "PROBLÈME"),
    "fig.consortium": _("Each site's epsilon spent (bar) against its approved cap (line).",
                       "Epsilon dépensé par chaque site (barre) comparé à son plafond approuvé (trait)."),
    "plot.spent": _("spent", "dépensé"),
    "plot.cap_short": _("approved cap", "plafond approuvé"),
    "cons.declined": _("Refusals to take part", "Refus de participer"),
    "cons.no_declined": _("No site refused a round.", "Aucun site n'a refusé de tour."),
    "cons.heads": _("Chain heads (for the minutes)", "Têtes de chaîne (pour le procès-verbal)"),
    "cons.site_reasons": _("Points per site", "Points par site"),
    "cons.sign_intro.one": _("We have reviewed this overview of the privacy budget of {n} site.",
                            "Nous avons examiné cette vue d'ensemble du budget de confidentialité de {n} site."),
    "cons.sign_intro.many": _("We have reviewed this overview of the privacy budgets of {n} sites.",
                             "Nous avons examiné cette vue d'ensemble des budgets de confidentialité de {n} sites."),
    "cons.verdict.ok": _("Verdict: every site's records verify and every site is within its approved budget.",
                        "Conclusion : les registres de chaque site sont vérifiés et chaque site reste dans son "
                        "budget approuvé."),
    "cons.verdict.attention": _("Verdict: every site's records verify and every site is within its approved "
                               "budget, but some points need attention (below).",
                               "Conclusion : les registres de chaque site sont vérifiés et chaque site reste dans "
                               "son budget approuvé, mais certains points demandent attention (ci-dessous)."),
    "cons.verdict.fail": _("VERDICT: PROBLEM FOUND at {sites}. Do not sign off before it is explained; see the "
                          "site's own ethics report.",
                          "CONCLUSION : PROBLÈME DÉTECTÉ pour {sites}. Ne pas approuver avant qu'il soit "
                          "expliqué ; voir le rapport d'éthique du site."),
}


def t(key: str, lang: Lang, **values: object) -> str:
    """The text ``key`` in ``lang`` with ``{name}`` fields filled in."""
    try:
        en, fr = TEXTS[key]
    except KeyError:
        raise KeyError(f"no report text {key!r}") from None
    if lang == "fr":
        return french_spacing(fr.format(**values) if values else fr)
    return en.format(**values) if values else en


def tn(key: str, lang: Lang, n: int, **values: object) -> str:
    """``key.one`` or ``key.many`` by ``n`` (French takes the singular for 0 and 1, English for 1 only)."""
    one = n <= 1 if lang == "fr" else n == 1
    return t(f"{key}.{'one' if one else 'many'}", lang, n=n, **values)


def check_name(name: str, lang: Lang) -> str:
    """An audit check's name in the reader's language; in French the English name follows, as ``flame audit``
    prints it."""
    key = f"check.{name}"
    if key not in TEXTS:
        return name
    text = t(key, lang)
    return f"{text} [{name}]" if lang != "en" and text != name else text


def grouped(hex_hash: str, digits: int = 20) -> str:
    """The first ``digits`` hex digits of a hash in groups of 4, to read aloud: ``3f9a 1c07 88b2 e410 5d3c``."""
    head = hex_hash[:digits]
    return " ".join(head[i:i + 4] for i in range(0, len(head), 4))


def french_spacing(text: str) -> str:
    """French puts a space before ; : ? ! and inside « »: make it non-breaking, so no line starts with ";"."""
    for mark in (";", ":", "?", "!", "»"):
        text = text.replace(f" {mark}", f"{NBSP}{mark}")
    return text.replace("« ", f"«{NBSP}")


def fields(text: str) -> set[str]:
    """The ``{name}`` fields of a text (the i18n test checks both languages use the same ones)."""
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def num(x: float, lang: Lang, digits: int = 2) -> str:
    """``5.77`` in English, ``5,77`` in French."""
    text = f"{x:.{digits}f}"
    return text.replace(".", ",") if lang == "fr" else text


def integer(n: int, lang: Lang) -> str:
    """``1,234,567`` in English, ``1 234 567`` (non-breaking spaces) in French."""
    text = f"{n:,}"
    return text.replace(",", NBSP) if lang == "fr" else text


def percent(share: float, lang: Lang) -> str:
    """``72%`` / ``72 %`` (French puts a non-breaking space before the sign)."""
    value = f"{100 * share:.0f}"
    return f"{value}{NBSP}%" if lang == "fr" else f"{value}%"


def small(x: float, lang: Lang) -> str:
    """A small probability such as delta: ``10⁻⁵``, ``2.5 × 10⁻⁶``."""
    if x <= 0 or not math.isfinite(x):
        return num(x, lang, 1)
    exponent = math.floor(math.log10(x))
    mantissa = x / 10**exponent
    if abs(mantissa - round(mantissa)) < 1e-9:
        mantissa = round(mantissa)
    power = "10" + str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    if mantissa == 1:
        return power
    m = f"{mantissa:g}"
    return f"{m.replace('.', ',') if lang == 'fr' else m} × {power}"


def factor(x: float, lang: Lang) -> str:
    """An odds factor: ``320``, ``1.8``, ``2.9 × 10³``."""
    if x >= 10_000:
        exponent = math.floor(math.log10(x))
        mantissa = f"{x / 10**exponent:.1f}"
        return f"{mantissa.replace('.', ',') if lang == 'fr' else mantissa} × 10" + str(exponent).translate(
            str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
    if x >= 10:
        return integer(round(x), lang)
    return num(x, lang, 1)


def day(d: date, lang: Lang) -> str:
    """``15 September 2025`` / ``15 septembre 2025``."""
    return f"{d.day} {_MONTHS[lang][d.month - 1]} {d.year}"


def yes_no(value: bool | None, lang: Lang, nothing: str = "none") -> str:
    return t(nothing, lang) if value is None else t("yes" if value else "no", lang)


def task_name(task: str, lang: Lang) -> str:
    key = f"task.{task}"
    return t(key, lang) if key in TEXTS else task


def timestamp(utc: str) -> str:
    """A log time ``2026-01-15T10:04:05.123456Z`` as ``2026-01-15 10:04``."""
    return utc[:16].replace("T", " ")
